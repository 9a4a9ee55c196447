package org.restorationzoo.core

import java.io.File
import java.io.FileInputStream
import java.io.InputStream
import java.security.MessageDigest

/**
 * manifest.json of a zoo export (export_mobile/schemas/manifest.schema.json, format_version 1):
 * what the artifact computes, how to feed it and how to tile photos for it.
 *
 * [Manifest.parse] checks every field the app relies on and names the first bad one, e.g.
 * `manifest.json is invalid: field inputs[0].dtype: "float64" is not one of float32, float16,
 * int8, uint8`. Fields the app does not use (tools, verification, notes, ...) are kept in [raw].
 */
class ManifestException(message: String) : RuntimeException(message)

/** int8/uint8 tensor parameters: real = scale * (stored - zeroPoint). */
data class QuantParams(val scale: Double, val zeroPoint: Int)

/** One input or output tensor of the artifact. */
data class TensorSpec(
    val name: String,
    /** In the order of [layout]: NCHW `[1, 3, H, W]` or NHWC `[1, H, W, 3]`. */
    val shape: List<Int>,
    /** float32, float16, int8 or uint8. */
    val dtype: String,
    /** NCHW or NHWC. */
    val layout: String,
    val valueRange: Pair<Double, Double>,
    val quantization: QuantParams?,
) {
    val isQuantized: Boolean get() = dtype == "int8" || dtype == "uint8"
    val channels: Int get() = if (layout == "NCHW") shape[1] else shape[3]
    val height: Int get() = if (layout == "NCHW") shape[2] else shape[1]
    val width: Int get() = if (layout == "NCHW") shape[3] else shape[2]
    val elementCount: Int get() = shape.fold(1) { acc, dim -> acc * dim }
}

/** The `tiling` section: the settings of [TilePlan.plan] for this artifact. */
data class TilingSpec(
    val tile: Int,
    val overlap: Int,
    val margin: Int,
    val sizeMultiple: Int,
    val scale: Int,
    val padMode: PadMode,
) {
    /** The tile plan for a `height` x `width` photo. */
    fun plan(height: Int, width: Int): TilePlan =
        TilePlan.plan(height, width, tile = tile, overlap = overlap, sizeMultiple = sizeMultiple, margin = margin)
}

data class ModelInfo(
    val name: String,
    val family: String,
    val variant: String,
    /** One of [Manifest.TASKS] (an older alias such as "sr" is read as the name it stands for). */
    val task: String,
    val scale: Int,
    val summary: String,
    val weightsSource: String,
)

data class ArtifactInfo(
    /** File (or .mlpackage folder) name, beside manifest.json. */
    val file: String,
    /** pte, mlpackage, tflite, onnx. */
    val format: String,
    val bytes: Long,
    val sha256: String,
    /** file or tree. */
    val sha256Method: String,
)

data class BackendInfo(
    /** executorch, coreml, litert, onnxruntime, qnn. */
    val runtime: String,
    val delegate: String?,
    val partitions: Int?,
    val options: Map<String, Any?>,
)

/**
 * `quantization.provenance` of a manifest: how the int8 model was made (PTQ, QAT or the export
 * target's own quantizer, recipe, layers kept in float, calibration, QAT steps and options; the
 * record of quantize/provenance.py, docs/quantization.md#provenance, schema `$defs/provenance`).
 *
 * The app does not interpret it: [record] is the object as read (every key, in file order, numbers
 * as [Json] reads them) and goes unchanged into the results' `artifact.quantization`, so a phone's
 * row in `zoo report` says how its artifact was quantized. [parse] checks the fields the schema
 * defines, naming the first bad one; keys it does not know are copied as they are (the Python side
 * validates the results file against the schema on import).
 */
data class QuantizationProvenance(
    /** ptq, qat or target. */
    val method: String,
    val record: Map<String, Any?>,
) {
    /** The JSON object written as `artifact.quantization` of a results record. */
    fun toJson(): Map<String, Any?> = record

    companion object {
        /** `$defs/provenance/properties/method` of both schemas. */
        val METHODS = listOf("ptq", "qat", "target")
        /** `$defs/provenance/required` of both schemas. */
        val REQUIRED = listOf("method", "recipe", "mixed", "calibration", "steps", "options", "source")

        /** The record in [field] (`quantization.provenance`); null when it is null (not recorded). */
        internal fun parse(field: Field): QuantizationProvenance? {
            if (field.value == null) return null
            val record = field.map()
            for (key in REQUIRED) field[key] // each required key is present ("field ... is missing")
            val method = field["method"].oneOf(METHODS)
            field["recipe"].stringOrNull()
            field["mixed"].stringOrNull()
            field["source"].stringOrNull()
            field["options"].map()
            field["steps"].intOrNull()?.let { if (it < 0) field["steps"].fail("$it is less than the minimum of 0") }
            field.optional("note")?.string()
            val calibration = field["calibration"]
            if (calibration.value != null) {
                calibration["data"].nonEmptyString()
                for (count in listOf("images", "batches")) {
                    calibration.optional(count)?.let { if (it.value != null) it.positiveInt() }
                }
                calibration.optional("degradation")?.stringOrNull()
            }
            return QuantizationProvenance(method, record)
        }
    }
}

/** Which Android runtime runs an artifact. */
enum class RuntimeKind(val runtimeName: String) {
    EXECUTORCH("executorch"),
    LITERT("litert");

    companion object {
        /**
         * The runtime for [manifest] on Android, picked by `target` (executorch-* -> ExecuTorch,
         * tflite -> LiteRT). Targets Android cannot run raise [ManifestException] naming the fix.
         */
        fun forManifest(manifest: Manifest): RuntimeKind {
            val target = manifest.target
            return when {
                target == "tflite" -> LITERT
                target == "executorch-xnnpack" || target == "executorch" -> EXECUTORCH
                target == "executorch-coreml" -> throw ManifestException(
                    "target $target (Core ML delegate) runs only on Apple devices; export executorch-xnnpack or tflite for Android",
                )
                target == "executorch-vulkan" || target == "executorch-qnn" -> throw ManifestException(
                    "target $target needs an ExecuTorch AAR built with the ${target.removePrefix("executorch-")} backend, " +
                        "but the app bundles org.pytorch:executorch-android (XNNPACK only); export executorch-xnnpack, " +
                        "or build the AAR with that backend (docs/android.md)",
                )
                target.startsWith("executorch") -> EXECUTORCH
                else -> throw ManifestException(
                    "target $target (${manifest.artifact.format}) does not run in the Android demo; " +
                        "export executorch-xnnpack (.pte) or tflite (.tflite)",
                )
            }
        }
    }
}

class Manifest(
    val model: ModelInfo,
    val artifact: ArtifactInfo,
    val target: String,
    val backend: BackendInfo,
    /** fp32, fp16, int8. */
    val precision: String,
    /** How the int8 model was made (`quantization.provenance`); null when the manifest does not say. */
    val provenance: QuantizationProvenance?,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val tiling: TilingSpec,
    val dynamicShapes: Boolean,
    val tools: Map<String, String?>,
    val created: String,
    /** The whole document as parsed. */
    val raw: Map<String, Any?>,
    /** Where it was read from (for messages). */
    val source: String,
) {
    val input: TensorSpec get() = inputs[0]
    val output: TensorSpec get() = outputs[0]

    /** The artifact beside the manifest in [folder]. */
    fun artifactFile(folder: File): File = File(folder, artifact.file)

    /**
     * Check that the artifact in [folder] exists and its sha256 (streamed, never read into memory
     * whole) equals the manifest's; returns the artifact file. [ManifestException] otherwise.
     */
    fun verifyArtifact(folder: File): File {
        val file = artifactFile(folder)
        if (!file.exists()) {
            throw ManifestException("artifact ${file.path} named by $source is missing; copy it beside manifest.json (re-export it with `zoo export`)")
        }
        val (digest, method) = if (file.isDirectory) Sha256.ofTree(file) to "tree" else Sha256.ofFile(file) to "file"
        if (method != artifact.sha256Method || digest != artifact.sha256) {
            throw ManifestException(
                "artifact ${file.name} does not match its manifest (sha256 ${digest.take(12)}... != ${artifact.sha256.take(12)}...): " +
                    "the file is corrupted or was replaced; copy the original file again or re-export it with `zoo export`",
            )
        }
        return file
    }

    companion object {
        const val FORMAT = "zoo-mobile-manifest"
        const val FORMAT_VERSION = 1L
        /** The task names of zoo/tasks.py, as both schemas spell them (tests/test_tasks.py checks). */
        val TASKS = listOf("denoise", "blind-denoise", "deblur", "derain", "super-resolution")
        /** Older spellings still read (manifests written before the task table said "sr"), never written. */
        val TASK_ALIASES = mapOf("sr" to "super-resolution")
        val DTYPES = listOf("float32", "float16", "int8", "uint8")
        val LAYOUTS = listOf("NCHW", "NHWC")
        val PRECISIONS = listOf("fp32", "fp16", "int8")
        val ARTIFACT_FORMATS = listOf("pte", "mlpackage", "tflite", "onnx")
        val RUNTIMES = listOf("executorch", "coreml", "litert", "onnxruntime", "qnn")
        private val SHA256 = Regex("^[0-9a-f]{64}$")

        /** Read `manifest.json` from a folder, or the given file. */
        fun load(location: File): Manifest {
            val file = if (location.isDirectory) File(location, "manifest.json") else location
            if (!file.isFile) {
                throw ManifestException("${file.path} does not exist; push the export folder written by `zoo export` (artifact + manifest.json)")
            }
            return parse(file.readText(Charsets.UTF_8), file.path)
        }

        /** Parse and check a manifest document; [source] names it in messages. */
        fun parse(text: String, source: String = "manifest.json"): Manifest {
            val document = try {
                Json.parse(text)
            } catch (err: JsonException) {
                throw ManifestException("$source is not valid JSON (${err.message}); copy the manifest.json written by `zoo export`")
            }
            val root = Field(document, "", source)
            root.map() // must be an object
            val format = root["format"].string()
            if (format != FORMAT) root["format"].fail("${Json.quote(format)} is not \"$FORMAT\" (this is not a zoo export manifest)")
            val version = root["format_version"].long()
            if (version > FORMAT_VERSION) {
                throw ManifestException(
                    "$source has format_version $version, newer than this app reads ($FORMAT_VERSION); update the Android demo app",
                )
            }
            if (version != FORMAT_VERSION) root["format_version"].fail("$version is not $FORMAT_VERSION")

            val modelField = root["model"]
            val model = ModelInfo(
                name = modelField["name"].nonEmptyString(),
                family = modelField["family"].nonEmptyString(),
                variant = modelField["variant"].nonEmptyString(),
                task = modelField["task"].oneOf(TASKS + TASK_ALIASES.keys).let { TASK_ALIASES[it] ?: it },
                scale = modelField["scale"].positiveInt(),
                summary = modelField["summary"].string(),
                weightsSource = modelField["weights"]["source"].oneOf(listOf("shipped", "file", "untrained")),
            )

            val artifactField = root["artifact"]
            val artifactFile = artifactField["file"].nonEmptyString()
            if (artifactFile.contains('/') || artifactFile.contains('\\') || artifactFile == "." || artifactFile == "..") {
                artifactField["file"].fail("${Json.quote(artifactFile)} is not a plain file name (the artifact lies beside manifest.json)")
            }
            val sha = artifactField["sha256"].string()
            if (!SHA256.matches(sha)) artifactField["sha256"].fail("${Json.quote(sha)} is not 64 lowercase hex digits")
            val bytes = artifactField["bytes"].long()
            if (bytes < 1) artifactField["bytes"].fail("$bytes is less than the minimum of 1")
            val artifact = ArtifactInfo(
                file = artifactFile,
                format = artifactField["format"].oneOf(ARTIFACT_FORMATS),
                bytes = bytes,
                sha256 = sha,
                sha256Method = artifactField["sha256_method"].oneOf(listOf("file", "tree")),
            )

            val target = root["target"].nonEmptyString()
            val backendField = root["backend"]
            val backend = BackendInfo(
                runtime = backendField["runtime"].oneOf(RUNTIMES),
                delegate = backendField["delegate"].stringOrNull(),
                partitions = backendField.optional("partitions")?.intOrNull(),
                options = backendField.optional("options")?.map() ?: emptyMap(),
            )
            val precision = root["precision"].oneOf(PRECISIONS)
            // null for float artifacts; manifests written before the provenance record have none.
            val quantizationField = root.optional("quantization")?.takeIf { it.value != null }
            quantizationField?.map() // must be an object when present
            val provenance = quantizationField?.optional("provenance")?.let { QuantizationProvenance.parse(it) }

            val tilingField = root["tiling"]
            val tileField = tilingField["tile"]
            val tileList = tileField.list()
            if (tileList.size != 2) tileField.fail("expected [height, width], got ${tileList.size} values")
            val tileHeight = tileField[0].positiveInt()
            val tileWidth = tileField[1].positiveInt()
            if (tileHeight != tileWidth) {
                tileField.fail("tile ${tileHeight}x$tileWidth is not square; the tile plan uses square tiles: export with --tile NxN")
            }
            val tiling = TilingSpec(
                tile = tileHeight,
                overlap = tilingField["overlap"].nonNegativeInt(),
                margin = tilingField["margin"].nonNegativeInt(),
                sizeMultiple = tilingField["size_multiple"].positiveInt(),
                scale = tilingField["scale"].positiveInt(),
                padMode = PadMode.fromName(tilingField["pad_mode"].oneOf(PadMode.values().map { it.jsonName })),
            )
            if (tiling.scale != model.scale) {
                tilingField["scale"].fail("${tiling.scale} differs from model.scale ${model.scale}")
            }
            try { // the same checks plan_tiles makes, so a bad plan is refused on load, not mid-photo
                tiling.plan(tiling.tile, tiling.tile)
            } catch (err: TilingException) {
                tilingField.fail(err.message ?: "invalid tiling")
            }

            val inputs = tensors(root["inputs"])
            val outputs = tensors(root["outputs"])
            val dynamic = root["dynamic_shapes"].bool()
            checkShape(inputs[0], root["inputs"][0], tiling.tile, "tiling.tile ${tiling.tile}")
            val outSide = tiling.tile * tiling.scale
            checkShape(outputs[0], root["outputs"][0], outSide, "tiling.tile ${tiling.tile} x scale ${tiling.scale} = $outSide")

            val tools = LinkedHashMap<String, String?>()
            for ((key, value) in root["tools"].map()) tools[key] = value as? String
            val created = root["created"].string()

            @Suppress("UNCHECKED_CAST")
            return Manifest(
                model = model,
                artifact = artifact,
                target = target,
                backend = backend,
                precision = precision,
                provenance = provenance,
                inputs = inputs,
                outputs = outputs,
                tiling = tiling,
                dynamicShapes = dynamic,
                tools = tools,
                created = created,
                raw = document as Map<String, Any?>,
                source = source,
            )
        }

        private fun tensors(field: Field): List<TensorSpec> {
            val items = field.list()
            if (items.isEmpty()) field.fail("needs at least one tensor")
            return items.indices.map { index -> tensor(field[index]) }
        }

        private fun tensor(field: Field): TensorSpec {
            val shapeField = field["shape"]
            val shapeList = shapeField.list()
            if (shapeList.size != 4) shapeField.fail("expected 4 dimensions (N, C, H, W or N, H, W, C), got ${shapeList.size}")
            val shape = shapeList.indices.map { shapeField[it].int() }
            val dtype = field["dtype"].oneOf(DTYPES)
            val layout = field["layout"].oneOf(LAYOUTS)
            val color = field["color"].string()
            if (color != "RGB") field["color"].fail("${Json.quote(color)} is not \"RGB\"")
            val rangeField = field["value_range"]
            if (rangeField.list().size != 2) rangeField.fail("expected [low, high]")
            val range = Pair(rangeField[0].double(), rangeField[1].double())
            val quantField = field["quantization"]
            val quantization = if (quantField.value == null) {
                null
            } else {
                val scale = quantField["scale"].double()
                if (!(scale > 0.0) || scale.isInfinite()) quantField["scale"].fail("$scale is not a positive number")
                QuantParams(scale, quantField["zero_point"].int())
            }
            if (dtype == "int8" || dtype == "uint8") {
                if (quantization == null) quantField.fail("null, but $dtype tensors need {\"scale\", \"zero_point\"} (real = scale * (q - zero_point))")
                val (low, high) = if (dtype == "int8") -128 to 127 else 0 to 255
                if (quantization.zeroPoint !in low..high) {
                    quantField["zero_point"].fail("${quantization.zeroPoint} is outside the $dtype range $low .. $high")
                }
            }
            return TensorSpec(field["name"].nonEmptyString(), shape, dtype, layout, range, quantization)
        }

        private fun checkShape(spec: TensorSpec, field: Field, side: Int, what: String) {
            val expected = if (spec.layout == "NCHW") listOf(1, 3, side, side) else listOf(1, side, side, 3)
            if (spec.shape.any { it < 0 }) {
                field["shape"].fail("${spec.shape} has dynamic dimensions (-1); the app feeds fixed tiles: export without --dynamic")
            }
            if (spec.shape != expected) {
                field["shape"].fail("${spec.shape} does not fit ${spec.layout} RGB tiles of $what: expected $expected")
            }
        }
    }
}

/** A value inside a parsed JSON document with its path, for messages naming the field. */
internal class Field(val value: Any?, val path: String, val source: String) {
    fun fail(problem: String): Nothing {
        val where = if (path.isEmpty()) "the document" else "field $path"
        throw ManifestException("$source is invalid: $where: $problem")
    }

    private fun describe(v: Any?): String = when (v) {
        null -> "null"
        is String -> Json.quote(v)
        is Map<*, *> -> "an object"
        is List<*> -> "an array"
        else -> v.toString()
    }

    operator fun get(key: String): Field {
        val map = map()
        val child = if (path.isEmpty()) key else "$path.$key"
        if (!map.containsKey(key)) throw ManifestException("$source is invalid: field $child is missing")
        return Field(map[key], child, source)
    }

    operator fun get(index: Int): Field {
        val list = list()
        if (index >= list.size) fail("has no item $index")
        return Field(list[index], "$path[$index]", source)
    }

    fun optional(key: String): Field? {
        val map = map()
        return if (map.containsKey(key)) Field(map[key], if (path.isEmpty()) key else "$path.$key", source) else null
    }

    @Suppress("UNCHECKED_CAST")
    fun map(): Map<String, Any?> = value as? Map<String, Any?> ?: fail("${describe(value)} is not an object")

    fun list(): List<Any?> = value as? List<Any?> ?: fail("${describe(value)} is not an array")

    fun string(): String = value as? String ?: fail("${describe(value)} is not a string")

    fun stringOrNull(): String? = if (value == null) null else string()

    fun nonEmptyString(): String = string().also { if (it.isEmpty()) fail("\"\" is empty") }

    fun bool(): Boolean = value as? Boolean ?: fail("${describe(value)} is not true or false")

    fun long(): Long = value as? Long ?: fail("${describe(value)} is not an integer")

    fun int(): Int {
        val v = long()
        if (v < Int.MIN_VALUE || v > Int.MAX_VALUE) fail("$v is out of range")
        return v.toInt()
    }

    fun intOrNull(): Int? = if (value == null) null else int()

    fun positiveInt(): Int = int().also { if (it < 1) fail("$it is less than the minimum of 1") }

    fun nonNegativeInt(): Int = int().also { if (it < 0) fail("$it is less than the minimum of 0") }

    fun double(): Double = when (value) {
        is Long -> value.toDouble()
        is Double -> value
        else -> fail("${describe(value)} is not a number")
    }

    fun oneOf(allowed: List<String>): String {
        val v = value as? String ?: fail("${describe(value)} is not one of ${allowed.joinToString(", ")}")
        if (v !in allowed) fail("${Json.quote(v)} is not one of ${allowed.joinToString(", ")}")
        return v
    }
}

/** Streamed sha256 digests, as export_mobile.manifest.sha256_of computes them. */
object Sha256 {
    private const val BUFFER = 1 shl 20

    fun hex(bytes: ByteArray): String {
        val out = StringBuilder(bytes.size * 2)
        for (b in bytes) {
            val v = b.toInt() and 0xff
            out.append("0123456789abcdef"[v ushr 4]).append("0123456789abcdef"[v and 15])
        }
        return out.toString()
    }

    fun ofBytes(bytes: ByteArray): String = hex(MessageDigest.getInstance("SHA-256").digest(bytes))

    /** sha256 of a stream, read in 1 MiB chunks (the stream is not closed). */
    fun ofStream(stream: InputStream): String {
        val digest = MessageDigest.getInstance("SHA-256")
        val buffer = ByteArray(BUFFER)
        while (true) {
            val count = stream.read(buffer)
            if (count < 0) break
            digest.update(buffer, 0, count)
        }
        return hex(digest.digest())
    }

    /** sha256 of a file's bytes (`sha256_method: file`). */
    fun ofFile(file: File): String = FileInputStream(file).use { ofStream(it) }

    /**
     * `sha256_method: tree` (an .mlpackage folder): sha256 of the UTF-8 text made of one line
     * `relative/posix/path<TAB>sha256-of-file\n` per regular file, sorted by path.
     */
    fun ofTree(folder: File): String {
        val files = folder.walkTopDown().filter { it.isFile }
            .map { it.relativeTo(folder).invariantSeparatorsPath to it }
            .sortedBy { it.first }
            .toList()
        val text = StringBuilder()
        for ((relative, file) in files) text.append(relative).append('\t').append(ofFile(file)).append('\n')
        return ofBytes(text.toString().toByteArray(Charsets.UTF_8))
    }
}
