package org.restorationzoo.demo

import android.Manifest as AndroidManifest
import android.annotation.SuppressLint
import android.content.ContentValues
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.net.Uri
import android.os.Build
import android.os.Bundle
import android.os.Environment
import android.provider.MediaStore
import android.view.MotionEvent
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.ImageView
import android.widget.ProgressBar
import android.widget.Spinner
import android.widget.TextView
import android.widget.Toast
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.core.content.ContextCompat
import androidx.core.content.FileProvider
import androidx.lifecycle.lifecycleScope
import java.io.File
import java.io.IOException
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.isActive
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.restorationzoo.core.LoadedModel
import org.restorationzoo.core.Manifest
import org.restorationzoo.core.TilingCancelledException
import org.restorationzoo.core.Tiler

/**
 * Pick a gallery photo or take one with the camera, choose an export (bundled in the APK under
 * assets/models/NAME/ or pushed to Android/data/org.restorationzoo.demo/files/models/NAME/),
 * restore the photo tile by tile in the background with progress, compare before/after (hold
 * the image), and save the result to the gallery (Pictures/RestorationZoo).
 */
class MainActivity : AppCompatActivity() {
    /** A model folder: bundled (copied out of the APK on first use) or pushed. */
    private data class ModelSource(val label: String, val assetName: String?, val folder: File?)

    private lateinit var spinner: Spinner
    private lateinit var modelInfo: TextView
    private lateinit var restoreButton: Button
    private lateinit var saveButton: Button
    private lateinit var progress: ProgressBar
    private lateinit var status: TextView
    private lateinit var imageView: ImageView

    private var sources: List<ModelSource> = emptyList()
    private var model: LoadedModel? = null
    private var manifest: Manifest? = null
    private var original: Bitmap? = null
    private var restored: Bitmap? = null
    private var job: Job? = null
    private var cameraUri: Uri? = null

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) loadPhoto(uri)
    }
    private val takePhoto = registerForActivityResult(ActivityResultContracts.TakePicture()) { saved ->
        val uri = cameraUri
        if (saved && uri != null) loadPhoto(uri)
    }
    private val askWritePermission = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) save() else toast("saving needs the storage permission on Android 9 and older")
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        spinner = findViewById(R.id.model_spinner)
        modelInfo = findViewById(R.id.model_info)
        restoreButton = findViewById(R.id.restore_button)
        saveButton = findViewById(R.id.save_button)
        progress = findViewById(R.id.progress)
        status = findViewById(R.id.status)
        imageView = findViewById(R.id.image_view)

        findViewById<Button>(R.id.pick_button).setOnClickListener {
            pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        findViewById<Button>(R.id.camera_button).setOnClickListener { launchCamera() }
        restoreButton.setOnClickListener { if (job?.isActive == true) job?.cancel() else restore() }
        saveButton.setOnClickListener { save() }
        setUpBeforeAfter()
        setUpModels()
    }

    override fun onDestroy() {
        job?.cancel()
        model?.close()
        super.onDestroy()
    }

    // ------------------------------------------------------------------------------ models

    private fun pushedModelsDir(): File = File(getExternalFilesDir(null), "models")

    private fun setUpModels() {
        val bundled = (assets.list("models") ?: emptyArray()).sorted()
            .filter { name -> (assets.list("models/$name") ?: emptyArray()).contains("manifest.json") }
            .map { ModelSource("bundled: $it", it, null) }
        val pushed = (pushedModelsDir().listFiles() ?: emptyArray())
            .filter { File(it, "manifest.json").isFile }.sortedBy { it.name }
            .map { ModelSource("pushed: ${it.name}", null, it) }
        sources = bundled + pushed
        if (sources.isEmpty()) {
            modelInfo.text = getString(R.string.no_models, pushedModelsDir().path)
            return
        }
        spinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_item, sources.map { it.label }).also {
            it.setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item)
        }
        spinner.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) = selectModel(sources[position])
            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
    }

    private fun selectModel(source: ModelSource) {
        job?.cancel()
        model?.close()
        model = null
        manifest = null
        updateButtons()
        modelInfo.text = "loading ${source.label} ..."
        job = lifecycleScope.launch {
            try {
                val (loadedManifest, loadedModel) = withContext(Dispatchers.IO) {
                    val folder = source.folder ?: copyBundledModel(source.assetName!!)
                    val parsed = Manifest.load(folder)
                    val artifact = parsed.verifyArtifact(folder) // sha256, streamed
                    parsed to Runtimes.load(parsed, artifact)
                }
                manifest = loadedManifest
                model = loadedModel
                val t = loadedManifest.tiling
                modelInfo.text = "${loadedManifest.model.name} (${loadedManifest.model.task}${if (t.scale > 1) " x${t.scale}" else ""}), " +
                    "${loadedManifest.target} ${loadedManifest.precision}, ${loadedModel.runtime.name} " +
                    "${loadedModel.runtime.version}; tile ${t.tile}, overlap ${t.overlap}; sha256 verified"
            } catch (err: CancellationException) {
                throw err
            } catch (err: Exception) {
                modelInfo.text = "cannot use ${source.label}: ${err.message}"
            }
            updateButtons()
        }
    }

    /** Copy assets/models/NAME/ into the app's files (runtimes need a file path); kept while unchanged. */
    private fun copyBundledModel(name: String): File {
        val folder = File(filesDir, "models/$name")
        val bundledManifest = assets.open("models/$name/manifest.json").use { it.readBytes() }
        val copiedManifest = File(folder, "manifest.json")
        if (copiedManifest.isFile && copiedManifest.readBytes().contentEquals(bundledManifest)) return folder
        folder.deleteRecursively()
        copyAssetTree("models/$name", folder)
        return folder
    }

    private fun copyAssetTree(path: String, target: File) {
        val children = assets.list(path) ?: emptyArray()
        if (children.isEmpty()) {
            target.parentFile?.mkdirs()
            assets.open(path).use { input -> target.outputStream().use { input.copyTo(it, 1 shl 20) } }
            return
        }
        target.mkdirs()
        for (child in children) copyAssetTree("$path/$child", File(target, child))
    }

    // ------------------------------------------------------------------------------ photos

    private fun launchCamera() {
        val file = File(cacheDir, "camera/photo.jpg").also { it.parentFile?.mkdirs() }
        val uri = FileProvider.getUriForFile(this, "$packageName.files", file)
        cameraUri = uri
        takePhoto.launch(uri)
    }

    private fun loadPhoto(uri: Uri) {
        status.text = "decoding ..."
        lifecycleScope.launch {
            try {
                val scale = manifest?.tiling?.scale ?: 1
                val bitmap = withContext(Dispatchers.IO) { Images.decodeUri(contentResolver, uri, MAX_OUTPUT_PIXELS / (scale * scale)) }
                original = bitmap
                restored = null
                imageView.setImageBitmap(bitmap)
                status.text = "${bitmap.width} x ${bitmap.height}"
            } catch (err: Exception) {
                status.text = "cannot open the photo: ${err.message}"
            }
            updateButtons()
        }
    }

    // ------------------------------------------------------------------------------ restoring

    private fun restore() {
        val photo = original ?: return
        val loaded = model ?: return
        val tiling = manifest?.tiling ?: return
        progress.visibility = View.VISIBLE
        progress.progress = 0
        restoreButton.setText(R.string.cancel)
        status.text = "restoring ..."
        job = lifecycleScope.launch {
            val start = System.nanoTime()
            try {
                val output = withContext(Dispatchers.Default) {
                    val image = Images.fromBitmap(photo)
                    val result = Tiler.restore(
                        image, loaded, tiling,
                        onTile = { done, total -> runOnUiThread { progress.progress = done * 100 / total; status.text = "tile $done / $total" } },
                        isCancelled = { !isActive },
                    )
                    Images.toBitmap(result)
                }
                restored = output
                imageView.setImageBitmap(output)
                status.text = "restored ${output.width} x ${output.height} in %.1f s (hold the image to see the original)"
                    .format((System.nanoTime() - start) / 1e9)
            } catch (err: CancellationException) {
                status.text = "cancelled"
            } catch (err: TilingCancelledException) {
                status.text = "cancelled"
            } catch (err: OutOfMemoryError) {
                status.text = "the photo is too large for this phone's memory: pick a smaller one"
            } catch (err: Exception) {
                status.text = "restoring failed: ${err.message}"
            } finally {
                progress.visibility = View.GONE
                restoreButton.setText(R.string.restore)
                updateButtons()
            }
        }
    }

    @SuppressLint("ClickableViewAccessibility")
    private fun setUpBeforeAfter() {
        imageView.setOnTouchListener { _, event ->
            val after = restored ?: return@setOnTouchListener false
            when (event.actionMasked) {
                MotionEvent.ACTION_DOWN -> imageView.setImageBitmap(original)
                MotionEvent.ACTION_UP, MotionEvent.ACTION_CANCEL -> imageView.setImageBitmap(after)
            }
            true
        }
    }

    // ------------------------------------------------------------------------------ saving

    private fun save() {
        val bitmap = restored ?: return
        if (Build.VERSION.SDK_INT < Build.VERSION_CODES.Q &&
            ContextCompat.checkSelfPermission(this, AndroidManifest.permission.WRITE_EXTERNAL_STORAGE) != PackageManager.PERMISSION_GRANTED
        ) {
            askWritePermission.launch(AndroidManifest.permission.WRITE_EXTERNAL_STORAGE)
            return
        }
        val name = "restored_${manifest?.model?.name ?: "photo"}_${System.currentTimeMillis()}.png"
        lifecycleScope.launch {
            try {
                withContext(Dispatchers.IO) { saveToMediaStore(bitmap, name) }
                toast("saved Pictures/RestorationZoo/$name")
            } catch (err: Exception) {
                toast("saving failed: ${err.message}")
            }
        }
    }

    private fun saveToMediaStore(bitmap: Bitmap, name: String) {
        val values = ContentValues().apply {
            put(MediaStore.Images.Media.DISPLAY_NAME, name)
            put(MediaStore.Images.Media.MIME_TYPE, "image/png")
            if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) {
                put(MediaStore.Images.Media.RELATIVE_PATH, Environment.DIRECTORY_PICTURES + "/RestorationZoo")
                put(MediaStore.Images.Media.IS_PENDING, 1)
            }
        }
        val uri = contentResolver.insert(MediaStore.Images.Media.EXTERNAL_CONTENT_URI, values)
            ?: throw IOException("the gallery refused a new image")
        try {
            contentResolver.openOutputStream(uri)?.use { bitmap.compress(Bitmap.CompressFormat.PNG, 100, it) }
                ?: throw IOException("cannot write $uri")
            if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) {
                values.clear()
                values.put(MediaStore.Images.Media.IS_PENDING, 0)
                contentResolver.update(uri, values, null, null)
            }
        } catch (err: Exception) {
            contentResolver.delete(uri, null, null)
            throw err
        }
    }

    // ------------------------------------------------------------------------------ helpers

    private fun updateButtons() {
        val busy = job?.isActive == true && progress.visibility == View.VISIBLE
        restoreButton.isEnabled = busy || (original != null && model != null)
        saveButton.isEnabled = !busy && restored != null
    }

    private fun toast(message: String) = Toast.makeText(this, message, Toast.LENGTH_LONG).show()

    companion object {
        /** Largest restored image (pixels) the demo makes: 12 MP, about 150 MB of float32 RGB. */
        private const val MAX_OUTPUT_PIXELS = 12_000_000L
    }
}
