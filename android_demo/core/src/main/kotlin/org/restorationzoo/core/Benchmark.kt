package org.restorationzoo.core

import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.nio.file.AtomicMoveNotSupportedException
import java.nio.file.Files
import java.nio.file.StandardCopyOption
import java.time.Instant
import java.time.temporal.ChronoUnit

/**
 * The benchmark behind BenchmarkActivity and its results file (export_mobile/schemas/
 * results.schema.json: format "zoo-results", format_version 1, one record of kind "device").
 *
 * Statistics: median and p90 are numpy.percentile(times, 50 / 90, method="linear") (numpy's
 * default), computed here with numpy's own interpolation formula; min; mean = sum / count.
 */

/** `latency_ms` of a record. */
data class LatencyStats(
    val median: Double,
    val p90: Double,
    val min: Double,
    val mean: Double,
    val runs: Int,
    val warmup: Int,
    val timer: String,
    /** forward, tile or image. */
    val per: String,
) {
    fun toJson(): Map<String, Any?> = linkedMapOf(
        "per" to per, "median" to median, "p90" to p90, "min" to min, "mean" to mean,
        "runs" to runs, "warmup" to warmup, "timer" to timer,
    )

    companion object {
        fun of(timesMs: DoubleArray, warmup: Int, timer: String, per: String = "tile"): LatencyStats {
            require(timesMs.isNotEmpty()) { "latency statistics need at least one timed run" }
            require(timesMs.all { it.isFinite() && it >= 0.0 }) { "times must be finite and >= 0" }
            val sorted = timesMs.sortedArray()
            return LatencyStats(
                median = percentile(sorted, 50.0),
                p90 = percentile(sorted, 90.0),
                min = sorted[0],
                mean = sorted.sum() / sorted.size,
                runs = sorted.size,
                warmup = warmup,
                timer = timer,
                per = per,
            )
        }

        /**
         * numpy.percentile(values, q, method="linear") of ascending [sorted] values: virtual index
         * (n - 1) * q / 100, linear interpolation written as numpy's `_lerp` (which switches to
         * `b - (b - a) * (1 - t)` for t >= 0.5), so the result matches numpy bit for bit.
         */
        fun percentile(sorted: DoubleArray, q: Double): Double {
            require(sorted.isNotEmpty()) { "percentile of no values" }
            require(q in 0.0..100.0) { "percentile $q outside 0 .. 100" }
            val n = sorted.size
            val index = (q / 100.0) * (n - 1)
            val below = Math.floor(index)
            val low = below.toInt().coerceIn(0, n - 1)
            val high = minOf(low + 1, n - 1)
            val t = index - below
            val a = sorted[low]
            val b = sorted[high]
            val diff = b - a
            return if (t >= 0.5) b - diff * (1.0 - t) else a + diff * t
        }
    }
}

/** `host` of a record (a phone: name from Build.MODEL, soc from Build.SOC_MODEL, ...). */
data class HostInfo(
    val name: String,
    val kind: String = "phone",
    val os: String? = "Android",
    val osVersion: String? = null,
    val cpu: String? = null,
    val cores: Int? = null,
    val gpu: String? = null,
    val soc: String? = null,
) {
    fun toJson(): Map<String, Any?> = linkedMapOf(
        "name" to name.ifBlank { "unknown device" }, "kind" to kind, "os" to os, "os_version" to osVersion,
        "cpu" to cpu, "cores" to cores, "gpu" to gpu, "soc" to soc,
    )
}

/** `runtime` of a record. */
data class RuntimeInfo(
    val name: String,
    val version: String? = null,
    val delegate: String? = null,
    val device: String? = "cpu",
    val precision: String? = null,
    val threads: Int? = null,
    val options: Map<String, Any?> = emptyMap(),
) {
    fun toJson(): Map<String, Any?> = linkedMapOf(
        "name" to name, "version" to version, "delegate" to delegate, "device" to device,
        "precision" to precision, "threads" to threads, "options" to options,
    )
}

/** One restored image of a benchmark (`images[]` of a record). */
data class ImageResult(
    val name: String,
    val height: Int,
    val width: Int,
    val tiles: Int,
    val latencyMs: Double,
    val outputSha256: String,
) {
    fun toJson(): Map<String, Any?> = linkedMapOf(
        "name" to name, "height" to height, "width" to width, "tiles" to tiles,
        "latency_ms" to latencyMs, "psnr" to null, "ssim" to null, "output_sha256" to outputSha256,
    )
}

/** A model loaded by a runtime: a [TileModel] that says what runs it and frees it on close. */
interface LoadedModel : TileModel, AutoCloseable {
    val runtime: RuntimeInfo
}

/** Warm-up + timed forward runs of one tile, and a tiled restore of each image. */
class Benchmark(
    private val model: TileModel,
    private val manifest: Manifest,
    /** Monotonic clock in nanoseconds (SystemClock.elapsedRealtimeNanos on Android). */
    private val clock: () -> Long = System::nanoTime,
) {
    /** Forward latency of one tile: [warmup] untimed runs, then [runs] timed ones (milliseconds each). */
    fun timeForward(input: FloatArray, runs: Int, warmup: Int, onRun: ((Int, Int) -> Unit)? = null): DoubleArray {
        require(runs >= 1) { "runs must be at least 1 (got $runs)" }
        require(warmup >= 0) { "warmup must be at least 0 (got $warmup)" }
        repeat(warmup) { model.run(input) }
        return DoubleArray(runs) { index ->
            val start = clock()
            model.run(input)
            val elapsed = clock() - start
            onRun?.invoke(index + 1, runs)
            elapsed / 1e6
        }
    }

    /** Restore one image with the manifest's tiling, timed; returns the result and the output. */
    fun restoreImage(name: String, image: PlanarImage, onTile: ((Int, Int) -> Unit)? = null): Pair<ImageResult, PlanarImage> {
        val plan = manifest.tiling.plan(image.height, image.width)
        val start = clock()
        val output = Tiler.restore(image, model, manifest.tiling, onTile)
        val elapsedMs = (clock() - start) / 1e6
        val result = ImageResult(name, image.height, image.width, plan.numTiles, elapsedMs, output.sha256())
        return result to output
    }

    companion object {
        /**
         * The tile the forward latency is measured on: the first tile of [image] (read through the
         * padding like the tiler does), or a deterministic colour ramp when there is no image.
         */
        fun firstTile(image: PlanarImage?, tile: Int): FloatArray {
            val input = FloatArray(3 * tile * tile)
            if (image == null || image.channels != 3) {
                for (c in 0 until 3) for (y in 0 until tile) for (x in 0 until tile) {
                    input[(c * tile + y) * tile + x] = ((x + y + 17 * c) % tile).toFloat() / tile
                }
                return input
            }
            val rows = Padding.sourceIndices(image.height, maxOf(image.height, tile))
            val cols = Padding.sourceIndices(image.width, maxOf(image.width, tile))
            for (c in 0 until 3) for (y in 0 until tile) for (x in 0 until tile) {
                input[(c * tile + y) * tile + x] = image[c, rows[y], cols[x]]
            }
            return input
        }
    }
}

/** Peak resident memory of this process (VmHWM of /proc/self/status; Linux and Android). */
object PeakMemory {
    fun vmHwmMb(status: File = File("/proc/self/status")): Double? = try {
        status.readLines().firstOrNull { it.startsWith("VmHWM:") }
            ?.removePrefix("VmHWM:")?.trim()?.split(Regex("\\s+"))?.firstOrNull()?.toDoubleOrNull()
            ?.let { kib -> kib / 1024.0 }
    } catch (err: IOException) {
        null
    }
}

/** Builds results documents and writes them atomically. */
object ResultsWriter {
    const val FORMAT = "zoo-results"
    const val FORMAT_VERSION = 1

    /** UTC now as the schema's timestamp, e.g. 2026-11-21T15:02:11Z. */
    fun utcNow(): String = Instant.now().truncatedTo(ChronoUnit.SECONDS).toString()

    /**
     * One record of kind "device" for [manifest] run by [runtime] on [host]; `artifact.quantization`
     * is the manifest's `quantization.provenance` when it has one.
     */
    fun deviceRecord(
        manifest: Manifest,
        runtime: RuntimeInfo,
        host: HostInfo,
        latency: LatencyStats,
        images: List<ImageResult>,
        peakMemoryMb: Double? = null,
        notes: List<String> = emptyList(),
        created: String = utcNow(),
    ): Map<String, Any?> {
        val tile = manifest.tiling.tile
        val megapixelsPerS = if (latency.median > 0.0) (tile.toDouble() * tile / 1e6) / (latency.median / 1000.0) else null
        val artifact = linkedMapOf<String, Any?>(
            "file" to manifest.artifact.file,
            "sha256" to manifest.artifact.sha256,
            "target" to manifest.target,
            "precision" to manifest.precision,
            "bytes" to manifest.artifact.bytes,
        )
        // How the int8 model was made, as the manifest says (absent = not recorded, as zoo check writes it).
        manifest.provenance?.let { artifact["quantization"] = it.toJson() }
        val record = linkedMapOf<String, Any?>(
            "kind" to "device",
            "model" to manifest.model.name,
            "task" to manifest.model.task,
            "scale" to manifest.model.scale,
            "artifact" to artifact,
            "runtime" to runtime.toJson(),
            "host" to host.toJson(),
            "input" to linkedMapOf(
                "height" to tile, "width" to tile, "batch" to 1,
                "tile" to tile, "overlap" to manifest.tiling.overlap,
            ),
            "latency_ms" to latency.toJson(),
            "throughput" to linkedMapOf(
                "megapixels_per_s" to megapixelsPerS, "gmacs_per_s" to null, "peak_fraction" to null,
            ),
        )
        if (peakMemoryMb != null && peakMemoryMb.isFinite()) record["peak_memory_mb"] = peakMemoryMb
        if (images.isNotEmpty()) record["images"] = images.map { it.toJson() }
        record["created"] = created
        record["complete"] = true
        record["notes"] = notes
        return record
    }

    /** A results document around [records]. */
    fun document(records: List<Map<String, Any?>>, producer: String, created: String = utcNow()): Map<String, Any?> {
        require(records.isNotEmpty()) { "a results document needs at least one record" }
        return linkedMapOf(
            "format" to FORMAT, "format_version" to FORMAT_VERSION, "producer" to producer,
            "created" to created, "records" to records,
        )
    }

    /** Write [document] to [file] atomically (FILE.tmp, flushed to disk, then renamed). */
    fun write(file: File, document: Map<String, Any?>): File {
        writeTextAtomically(file, Json.write(document) + "\n")
        return file
    }

    /** Write [text] to `file.tmp`, sync it, and rename it over [file]: readers never see a partial file. */
    fun writeTextAtomically(file: File, text: String) {
        val parent = file.absoluteFile.parentFile
        if (parent != null && !parent.isDirectory && !parent.mkdirs()) throw IOException("cannot create folder $parent")
        val tmp = File(parent, file.name + ".tmp")
        FileOutputStream(tmp).use { stream ->
            stream.write(text.toByteArray(Charsets.UTF_8))
            stream.flush()
            stream.fd.sync()
        }
        try {
            Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING)
        } catch (err: AtomicMoveNotSupportedException) {
            Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.REPLACE_EXISTING)
        }
    }
}

/**
 * The benchmark contract of BenchmarkActivity, without Android: DEVICE_DIR holds the artifact,
 * manifest.json and images/&ast;.png; [run] verifies the artifact, times [Options.runs] forward runs
 * of one tile after [Options.warmup] warm-up runs, restores every image once with tiling, and
 * writes DEVICE_DIR/<results> atomically, or DEVICE_DIR/error.txt with the message on failure.
 */
object BenchmarkRunner {
    const val ERROR_FILE = "error.txt"

    data class Options(
        val runs: Int,
        val warmup: Int,
        val resultsName: String = "results.json",
        val producer: String = "android_demo benchmark",
        val timer: String = "android_elapsedRealtimeNanos",
        val clock: () -> Long = System::nanoTime,
        val notes: List<String> = emptyList(),
    )

    /** Check the options; returns a message for error.txt, or null when they are fine. */
    fun checkOptions(options: Options): String? = when {
        options.runs < 1 -> "runs must be at least 1 (got ${options.runs}): pass --ei runs N with N >= 1"
        options.warmup < 0 -> "warmup must be at least 0 (got ${options.warmup}): pass --ei warmup N with N >= 0"
        options.resultsName.isEmpty() || options.resultsName.contains('/') || options.resultsName.contains('\\') ||
            options.resultsName == ERROR_FILE || options.resultsName.startsWith(".") ->
            "results file name \"${options.resultsName}\" must be a plain file name inside the folder, e.g. results.json"
        else -> null
    }

    /**
     * Run the benchmark in [dir]. Returns the results file; on any failure writes error.txt
     * (one line: the message) and rethrows. [loadModel] opens the verified artifact with the
     * runtime of the manifest's target; [loadImage] decodes a PNG to a float RGB image.
     */
    fun run(
        dir: File,
        options: Options,
        host: HostInfo,
        loadModel: (Manifest, File) -> LoadedModel,
        loadImage: (File) -> PlanarImage,
        log: (String) -> Unit = {},
    ): File {
        val resultsFile = File(dir, options.resultsName.ifEmpty { "results.json" })
        val errorFile = File(dir, ERROR_FILE)
        try {
            if (!dir.isDirectory) throw IOException("benchmark folder $dir does not exist; push the artifact, manifest.json and images/ there first")
            // Never leave an earlier run's answer for the caller to read.
            errorFile.delete()
            checkOptions(options)?.let { throw IllegalArgumentException(it) }
            resultsFile.delete()
            val manifest = Manifest.load(File(dir, "manifest.json"))
            RuntimeKind.forManifest(manifest)
            log("verifying ${manifest.artifact.file} (sha256)")
            val artifact = manifest.verifyArtifact(dir)
            val imageFiles = (File(dir, "images").listFiles() ?: emptyArray())
                .filter { it.isFile && it.name.lowercase().endsWith(".png") }
                .sortedBy { it.name }
            val images = imageFiles.map { it.name.substring(0, it.name.length - 4) to loadImage(it) }
            log("loading ${artifact.name}")
            val results = loadModel(manifest, artifact).use { model ->
                val benchmark = Benchmark(model, manifest, options.clock)
                val input = Benchmark.firstTile(images.firstOrNull()?.second, manifest.tiling.tile)
                log("forward: ${options.warmup} warm-up + ${options.runs} timed runs")
                val times = benchmark.timeForward(input, options.runs, options.warmup)
                val latency = LatencyStats.of(times, options.warmup, options.timer, per = "tile")
                val imageResults = images.map { (name, image) ->
                    log("restoring $name (${image.width}x${image.height})")
                    benchmark.restoreImage(name, image).first
                }
                val notes = ArrayList<String>()
                notes.add("artifact sha256 verified on the device before loading")
                notes.add("latency_ms: one forward pass of one ${manifest.tiling.tile}x${manifest.tiling.tile} tile; p90 = numpy.percentile(..., 90, method='linear')")
                if (imageResults.isNotEmpty()) notes.add("images[].latency_ms: one tiled restore of the whole image, including tiling and blending")
                else notes.add("no images/*.png in the folder: only the forward latency was measured (on a synthetic tile)")
                notes.addAll(options.notes)
                val record = ResultsWriter.deviceRecord(
                    manifest, model.runtime, host, latency, imageResults, PeakMemory.vmHwmMb(), notes,
                )
                ResultsWriter.document(listOf(record), options.producer)
            }
            ResultsWriter.write(resultsFile, results)
            log("wrote $resultsFile")
            return resultsFile
        } catch (err: Throwable) {
            val message = (err.message ?: err.toString()).lines().joinToString(" ").trim()
            val kind = if (err is ManifestException || err is TilingException || err is IllegalArgumentException || err is IOException) "" else "${err::class.java.simpleName}: "
            try {
                if (dir.isDirectory) ResultsWriter.writeTextAtomically(errorFile, kind + message + "\n")
            } catch (ignored: IOException) {
                // the folder is gone or read-only: nothing more to report there
            }
            throw err
        }
    }
}
