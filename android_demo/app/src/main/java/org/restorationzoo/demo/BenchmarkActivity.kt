package org.restorationzoo.demo

import android.content.Intent
import android.os.Bundle
import android.os.PowerManager
import android.os.SystemClock
import android.util.Log
import android.view.WindowManager
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import androidx.lifecycle.lifecycleScope
import java.io.File
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.restorationzoo.core.BenchmarkRunner

/**
 * Benchmark mode, started over adb by `zoo device android` (the contract is in docs/android.md):
 *
 *     adb shell am start -W -n org.restorationzoo.demo/.BenchmarkActivity \
 *         --es dir DEVICE_DIR --ei runs N --ei warmup W --es results results.json
 *
 * DEVICE_DIR (e.g. /sdcard/Android/data/org.restorationzoo.demo/files/bench/RUN_ID) holds the
 * artifact, manifest.json and images/&#42;.png. The benchmark runs off the main thread and writes
 * DEVICE_DIR/results.json atomically, or DEVICE_DIR/error.txt with the message; then the
 * activity finishes. Optional: --ei threads T (LiteRT CPU threads, default 4).
 */
class BenchmarkActivity : AppCompatActivity() {
    private lateinit var logView: TextView
    private var running = false

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_benchmark)
        setTitle(R.string.benchmark_title)
        logView = findViewById(R.id.log)
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        if (savedInstanceState == null) start(intent)
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        if (running) {
            log("a benchmark is already running; ignoring the new request for ${intent.getStringExtra(EXTRA_DIR)}")
        } else {
            start(intent)
        }
    }

    private fun start(intent: Intent) {
        val dirPath = intent.getStringExtra(EXTRA_DIR)
        if (dirPath.isNullOrEmpty()) {
            log("missing --es $EXTRA_DIR DEVICE_DIR: nothing to benchmark")
            finish()
            return
        }
        val sustained = (getSystemService(POWER_SERVICE) as PowerManager).isSustainedPerformanceModeSupported
        if (sustained) window.setSustainedPerformanceMode(true)
        val notes = listOfNotNull(
            if (sustained) "sustained performance mode on" else "sustained performance mode not supported",
            DeviceInfo.batteryNote(this),
        )
        val options = BenchmarkRunner.Options(
            runs = intent.getIntExtra(EXTRA_RUNS, DEFAULT_RUNS),
            warmup = intent.getIntExtra(EXTRA_WARMUP, DEFAULT_WARMUP),
            resultsName = intent.getStringExtra(EXTRA_RESULTS) ?: "results.json",
            producer = "android_demo ${BuildConfig.VERSION_NAME} benchmark",
            timer = "android_elapsedRealtimeNanos",
            clock = SystemClock::elapsedRealtimeNanos,
            notes = notes,
        )
        val threads = intent.getIntExtra(EXTRA_THREADS, Runtimes.DEFAULT_THREADS)
        val host = DeviceInfo.host(this)
        running = true
        log("benchmark of $dirPath: ${options.warmup} warm-up + ${options.runs} runs")
        lifecycleScope.launch {
            val outcome = withContext(Dispatchers.Default) {
                runCatching {
                    BenchmarkRunner.run(
                        dir = File(dirPath),
                        options = options,
                        host = host,
                        loadModel = { manifest, artifact -> Runtimes.load(manifest, artifact, threads) },
                        loadImage = Images::decodePng,
                        log = { message -> log(message) },
                    )
                }
            }
            outcome.onSuccess { log("done: $it") }
            outcome.onFailure { err ->
                Log.e(TAG, "benchmark failed", err)
                log("failed (see error.txt): ${err.message}")
            }
            running = false
            finish()
        }
    }

    private fun log(message: String) {
        Log.i(TAG, message)
        runOnUiThread { logView.append(message + "\n") }
    }

    companion object {
        private const val TAG = "ZooBenchmark"
        const val EXTRA_DIR = "dir"
        const val EXTRA_RUNS = "runs"
        const val EXTRA_WARMUP = "warmup"
        const val EXTRA_RESULTS = "results"
        const val EXTRA_THREADS = "threads"
        const val DEFAULT_RUNS = 20
        const val DEFAULT_WARMUP = 3
    }
}
