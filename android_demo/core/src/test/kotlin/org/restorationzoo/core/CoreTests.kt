package org.restorationzoo.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO
import kotlin.system.exitProcess

/**
 * Test runner for the core module, with no test framework: `main(command, args...)`.
 *
 * tests/test_android_core.py compiles core/ together with this file and calls the commands; the
 * Python side prepares inputs (golden plans, manifests, images) and checks the outputs against
 * zoo.tiling, numpy and the results JSON Schema. Commands:
 *
 *   selftest                        unit checks; prints "selftest: N passed, M failed"
 *   plans PLANS.json OUT.json       Kotlin plans of every golden case (+ exact comparison here)
 *   manifests DIR OUT.json          parse every .json file in DIR: summary or error message (+ sha256 check)
 *   quant IN.json OUT.json          quantize/dequantize values, NCHW <-> NHWC
 *   tile CASE.json                  tiled restore of a raw float32 image with a fake model
 *   bench DIR RUNS WARMUP RESULTS MODEL   BenchmarkRunner with a fake model and a fake clock
 *
 * It can also be run from Gradle: ./gradlew :core:runCoreTests (selftest).
 */

private var passed = 0
private var failed = 0

private fun check(name: String, condition: Boolean, detail: () -> String = { "" }) {
    if (condition) {
        passed++
    } else {
        failed++
        println("FAIL $name ${detail()}")
    }
}

private inline fun <reified T : Throwable> expectThrows(name: String, fragment: String, block: () -> Unit) {
    try {
        block()
        check(name, false) { "no exception (expected ${T::class.java.simpleName} containing \"$fragment\")" }
    } catch (err: Throwable) {
        val ok = err is T && (err.message ?: "").contains(fragment)
        check(name, ok) { "got ${err::class.java.simpleName}: ${err.message} (expected \"$fragment\")" }
    }
}

private fun readF32(file: File): FloatArray {
    val buffer = ByteBuffer.wrap(file.readBytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
    return FloatArray(buffer.remaining()).also { buffer.get(it) }
}

private fun writeF32(file: File, values: FloatArray) {
    val buffer = ByteBuffer.allocate(values.size * 4).order(ByteOrder.LITTLE_ENDIAN)
    buffer.asFloatBuffer().put(values)
    file.writeBytes(buffer.array())
}

@Suppress("UNCHECKED_CAST")
private fun obj(value: Any?): Map<String, Any?> = value as Map<String, Any?>

@Suppress("UNCHECKED_CAST")
private fun arr(value: Any?): List<Any?> = value as List<Any?>

private fun num(value: Any?): Double = (value as Number).toDouble()

// ------------------------------------------------------------------------------------ fake models

/** Nearest-neighbour upsampling of a 3 x tile x tile NCHW tile by [factor]. */
private fun nearest(input: FloatArray, tile: Int, factor: Int): FloatArray {
    val side = factor * tile
    val out = FloatArray(3 * side * side)
    for (c in 0 until 3) for (y in 0 until side) for (x in 0 until side) {
        out[(c * side + y) * side + x] = input[(c * tile + y / factor) * tile + x / factor]
    }
    return out
}

/** 3x3 mean of a 3 x tile x tile NCHW tile, zero padding (a conv with radius 1). */
private fun box3(input: FloatArray, tile: Int): FloatArray {
    val out = FloatArray(input.size)
    for (c in 0 until 3) for (y in 0 until tile) for (x in 0 until tile) {
        var sum = 0f
        for (dy in -1..1) for (dx in -1..1) {
            val yy = y + dy
            val xx = x + dx
            if (yy in 0 until tile && xx in 0 until tile) sum += input[(c * tile + yy) * tile + xx]
        }
        out[(c * tile + y) * tile + x] = sum / 9f
    }
    return out
}

/** Fake super-resolution models: `nearestNx` (N = 2, 3, 4, ...) and `box3-nearestNx` (3x3 mean, then nearest). */
private val UPSCALING = Regex("(box3-)?nearest([1-9])x")

/** Fake models, the same ones tests/test_android_core.py builds in torch. */
fun fakeModel(name: String, tile: Int): TileModel {
    val upscaling = UPSCALING.matchEntire(name)
    if (upscaling != null) {
        val factor = upscaling.groupValues[2].toInt()
        val blur = upscaling.groupValues[1].isNotEmpty()
        return TileModel { input -> nearest(if (blur) box3(input, tile) else input, tile, factor) }
    }
    return when (name) {
        "identity" -> TileModel { it.copyOf() }
        "invert" -> TileModel { input -> FloatArray(input.size) { 1f - input[it] } }
        "box3" -> TileModel { input -> box3(input, tile) }
        else -> throw IllegalArgumentException("unknown fake model $name")
    }
}

// ------------------------------------------------------------------------------------ selftest

/** A QAT provenance record as quantize/provenance.py writes it, plus a key a later zoo might add. */
private const val QAT_PROVENANCE = """{"method": "qat", "recipe": "xnnpack", "mixed": "first-last",
    "calibration": {"data": "urban100+bundled", "images": null, "batches": 8, "degradation": "gaussian:15-50"},
    "steps": 2000, "options": {"ranges": "ptq", "learnable_scales": true, "distill_from_float": 1.0, "lr": 2.0E-5},
    "source": "config qat_x, run runs/qat_x", "note": "hand-made", "later_key": [1, 2]}"""

/** [QuantizationProvenance.parse] of [QAT_PROVENANCE] after [edit], as `quantization.provenance` of test.json. */
private fun parseProvenance(edit: (MutableMap<String, Any?>) -> Unit = {}): QuantizationProvenance? {
    val record = LinkedHashMap(obj(Json.parse(QAT_PROVENANCE)))
    edit(record)
    return QuantizationProvenance.parse(Field(record, "quantization.provenance", "test.json"))
}

private fun provenanceChecks() {
    val provenance = parseProvenance()
    check("provenance method", provenance?.method == "qat") { "$provenance" }
    check("provenance kept whole", provenance?.toJson() == Json.parse(QAT_PROVENANCE)) { "$provenance" }
    check("provenance key order", provenance?.toJson()?.keys?.toList() == listOf(
        "method", "recipe", "mixed", "calibration", "steps", "options", "source", "note", "later_key",
    )) { "${provenance?.toJson()?.keys}" }
    check("provenance written back", Json.parse(Json.write(provenance!!.toJson())) == Json.parse(QAT_PROVENANCE))
    check("provenance null", QuantizationProvenance.parse(Field(null, "quantization.provenance", "test.json")) == null)
    val ptq = parseProvenance { it["method"] = "ptq"; it["steps"] = null; it["calibration"] = null }
    check("provenance ptq", ptq?.method == "ptq") { "$ptq" }
    val prefix = "test.json is invalid: field quantization.provenance"
    expectThrows<ManifestException>("provenance method", "$prefix.method: \"gptq\" is not one of ptq, qat, target") {
        parseProvenance { it["method"] = "gptq" }
    }
    expectThrows<ManifestException>("provenance required", "$prefix.steps is missing") {
        parseProvenance { it.remove("steps") }
    }
    expectThrows<ManifestException>("provenance steps", "$prefix.steps: -1 is less than the minimum of 0") {
        parseProvenance { it["steps"] = -1L }
    }
    expectThrows<ManifestException>("provenance options", "$prefix.options: null is not an object") {
        parseProvenance { it["options"] = null }
    }
    expectThrows<ManifestException>("provenance recipe", "$prefix.recipe: 3 is not a string") {
        parseProvenance { it["recipe"] = 3L }
    }
    expectThrows<ManifestException>("provenance calibration data", "$prefix.calibration.data is missing") {
        parseProvenance { it["calibration"] = mapOf("images" to 3L) }
    }
    expectThrows<ManifestException>("provenance count", "$prefix.calibration.images: 0 is less than the minimum of 1") {
        parseProvenance { it["calibration"] = mapOf("data" to "urban100", "images" to 0L) }
    }
    expectThrows<ManifestException>("provenance not an object", "$prefix: \"PTQ\" is not an object") {
        QuantizationProvenance.parse(Field("PTQ", "quantization.provenance", "test.json"))
    }
}

private fun selftest() {
    // JSON
    val text = """{"a": [1, -2.5, 3e2, true, false, null], "b": "x\"y\\z\n\u00e9\ud83d\ude00", "c": {}, "d": [], "e": 12345678901234}"""
    val parsed = obj(Json.parse(text))
    check("json long", parsed["e"] == 12345678901234L)
    check("json numbers", arr(parsed["a"]) == listOf(1L, -2.5, 300.0, true, false, null)) { "${parsed["a"]}" }
    check("json string escapes", parsed["b"] == "x\"y\\z\né\uD83D\uDE00") { "${parsed["b"]}" }
    check("json round trip", Json.parse(Json.write(parsed)) == parsed)
    check("json compact", Json.write(mapOf("k" to listOf(1, 2.5)), indent = 0) == """{"k":[1,2.5]}""") { Json.write(mapOf("k" to listOf(1, 2.5)), 0) }
    check("json control chars", Json.write("a\u0001") == "\"a\\u0001\"")
    expectThrows<JsonException>("json trailing text", "line 1, column 4") { Json.parse("{} x") }
    expectThrows<JsonException>("json line numbers", "line 3") { Json.parse("{\n\"a\": 1,\n\"b\": }") }
    expectThrows<JsonException>("json duplicate key", "duplicate key") { Json.parse("""{"a": 1, "a": 2}""") }
    expectThrows<JsonException>("json NaN refused", "NaN") { Json.write(Double.NaN) }
    expectThrows<JsonException>("json leading zero", "unexpected text") { Json.parse("01") }
    for (value in listOf(0.1, 1e-7, 123456.789, 5e300, 41.7, 1.0 / 3)) {
        check("json double $value", Json.parse(Json.write(value)) == value)
    }

    // Tiling: validation messages mirror zoo.tiling.plan_tiles
    expectThrows<TilingException>("tile multiple", "tile 30 is not a multiple of the model's size_multiple 16; use a multiple of 16, e.g. 32") {
        TilePlan.plan(100, 100, tile = 30, overlap = 0, sizeMultiple = 16)
    }
    expectThrows<TilingException>("overlap half", "overlap 5 (rounded up to 16, a multiple of 16) is not less than half the tile 32; use overlap 0 .. 0 or a larger tile") {
        TilePlan.plan(100, 100, tile = 32, overlap = 5, sizeMultiple = 16)
    }
    expectThrows<TilingException>("overlap negative", "overlap -1 is not an integer >= 0") { TilePlan.plan(10, 10, tile = 8, overlap = -1) }
    expectThrows<TilingException>("margin range", "margin 3 is outside 0 .. overlap // 2 = 2") { TilePlan.plan(10, 10, tile = 16, overlap = 4, margin = 3) }
    expectThrows<TilingException>("height", "image height 0 is not a positive integer") { TilePlan.plan(0, 10, tile = 16, overlap = 4) }
    val worked = TilePlan.plan(203, 157, tile = 64, overlap = 8)
    check("docs worked example rows", worked.rowStarts.toList() == listOf(0, 56, 112, 139)) { worked.toString() }
    check("docs worked example cols", worked.colStarts.toList() == listOf(0, 56, 93)) { worked.toString() }
    val multiple = TilePlan.plan(203, 157, tile = 64, overlap = 18, sizeMultiple = 4)
    check("docs size-multiple example", multiple.rowStarts.toList() == listOf(0, 44, 88, 132, 140) &&
        multiple.paddedHeight == 204 && multiple.paddedWidth == 160) { multiple.toString() }
    val ramp = TilePlan.plan(56, 56, tile = 32, overlap = 8, margin = 2).axisWeights(Axis.ROWS)
    val expectedRamp = floatArrayOf(0f, 0f, 0.2f, 0.4f, 0.6f, 0.8f, 1f, 1f)
    check("docs ramp example", (0 until 8).all { Math.abs(ramp[1][it] - expectedRamp[it]) < 1e-6f }) { ramp[1].toList().toString() }
    check("reflect indices", Padding.sourceIndices(4, 7).toList() == listOf(0, 1, 2, 3, 2, 1, 0))
    check("replicate indices", Padding.sourceIndices(3, 7).toList() == listOf(0, 1, 2, 2, 2, 2, 2))
    check("pad mode switch", Padding.axisPadMode(4, 8) == PadMode.REPLICATE && Padding.axisPadMode(5, 8) == PadMode.REFLECT)

    // sha256
    check("sha256 empty", Sha256.ofBytes(ByteArray(0)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    check("sha256 abc", Sha256.ofBytes("abc".toByteArray()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")

    // Percentiles (numpy: percentile([1, 2, 3, 4], 90) = 3.7, median 2.5)
    val sorted = doubleArrayOf(1.0, 2.0, 3.0, 4.0)
    check("percentile 50", LatencyStats.percentile(sorted, 50.0) == 2.5)
    check("percentile 90", Math.abs(LatencyStats.percentile(sorted, 90.0) - 3.7) < 1e-12)
    check("percentile single", LatencyStats.percentile(doubleArrayOf(7.0), 90.0) == 7.0)

    // Quantization of the unit range: every 8-bit level survives int8 (scale 1/255, zero point -128)
    val unit = QuantParams(1.0 / 255.0, -128)
    check("int8 levels round trip", (0..255).all { level ->
        val q = Quantization.quantize(level / 255f, unit, "int8")
        PlanarImage.toLevel(Quantization.dequantize(q, unit)) == level && q == level - 128
    })
    check("int8 clipping", Quantization.quantize(2f, unit, "int8") == 127 && Quantization.quantize(-1f, unit, "int8") == -128)
    check("uint8 bytes", Quantization.dequantize(byteArrayOf(-1), QuantParams(1.0, 0), "uint8")[0] == 255f)

    // Benchmark options
    check("options ok", BenchmarkRunner.checkOptions(BenchmarkRunner.Options(runs = 1, warmup = 0)) == null)
    check("options runs", BenchmarkRunner.checkOptions(BenchmarkRunner.Options(runs = 0, warmup = 0))?.contains("runs must be at least 1") == true)
    check("options name", BenchmarkRunner.checkOptions(BenchmarkRunner.Options(runs = 1, warmup = 0, resultsName = "../x.json")) != null)

    // Peak memory (Linux/Android)
    val peak = PeakMemory.vmHwmMb()
    check("peak memory", peak == null || peak > 0.0) { "$peak" }

    // Image helpers
    val argb = intArrayOf(0xff102030.toInt(), 0xff405060.toInt())
    val image = PlanarImage.fromArgb(argb, 2, 1)
    check("argb round trip", image.toArgb().contentEquals(argb))
    check("rgb bytes", image.toRgbBytes().map { it.toInt() and 0xff } == listOf(0x10, 0x20, 0x30, 0x40, 0x50, 0x60))
    check("round half to even", PlanarImage.toLevel(0.5f / 255f) == 0 && PlanarImage.toLevel(1.5f / 255f) == 2)

    // /proc/cpuinfo -> host.cpu
    val cpuinfo = (0 until 9).joinToString("\n\n") { i ->
        val part = when { i < 4 -> "0xd46"; i < 8 -> "0xd4d"; else -> "0xd4e" }
        "processor\t: $i\nCPU implementer\t: 0x41\nCPU part\t: $part"
    }
    check("cpuinfo clusters", CpuInfo.describe(cpuinfo) == "1x Cortex-X3 + 4x Cortex-A715 + 4x Cortex-A510") { "${CpuInfo.describe(cpuinfo)}" }
    check("cpuinfo x86", CpuInfo.describe("processor : 0\nmodel name\t: Intel Xeon\n") == "Intel Xeon")

    provenanceChecks()

    println("selftest: $passed passed, $failed failed")
}

// ------------------------------------------------------------------------------------ commands

private fun plans(input: File, output: File) {
    val golden = arr(Json.parse(input.readText()))
    val out = ArrayList<Any?>()
    for ((index, item) in golden.withIndex()) {
        val case = obj(item)
        val scale = num(case["scale"]).toInt()
        val plan = TilePlan.plan(
            num(case["height"]).toInt(), num(case["width"]).toInt(), tile = num(case["tile"]).toInt(),
            overlap = num(case["overlap"]).toInt(), sizeMultiple = num(case["size_multiple"]).toInt(),
            margin = num(case["margin"]).toInt(),
        )
        val rows = plan.axisWeights(Axis.ROWS, scale)
        val cols = plan.axisWeights(Axis.COLS, scale)
        val mine = linkedMapOf<String, Any?>(
            "height" to plan.height, "width" to plan.width, "tile" to plan.tile, "overlap" to num(case["overlap"]).toInt(),
            "size_multiple" to plan.sizeMultiple, "scale" to scale, "margin" to plan.margin,
            "padded_height" to plan.paddedHeight, "padded_width" to plan.paddedWidth,
            "pad_modes" to listOf(plan.padModes.first.jsonName, plan.padModes.second.jsonName),
            "row_starts" to plan.rowStarts.toList(), "col_starts" to plan.colStarts.toList(),
            "row_weights" to rows.map { w -> w.map { it.toDouble() } },
            "col_weights" to cols.map { w -> w.map { it.toDouble() } },
        )
        out.add(mine)
        for (key in mine.keys) {
            val expected = case[key]
            val actual = mine[key]
            val same = if (key.endsWith("_weights")) {
                val e = arr(expected).map { row -> arr(row).map { num(it) } }
                e == actual
            } else {
                Json.write(expected) == Json.write(actual)
            }
            check("plan $index $key", same) { "expected ${Json.write(expected, 0)}, got ${Json.write(actual, 0)}" }
        }
    }
    output.writeText(Json.write(out))
    println("plans: $passed passed, $failed failed")
}

private fun tensorJson(spec: TensorSpec): Map<String, Any?> = linkedMapOf(
    "name" to spec.name, "shape" to spec.shape, "dtype" to spec.dtype, "layout" to spec.layout,
    "value_range" to listOf(spec.valueRange.first, spec.valueRange.second),
    "quantization" to spec.quantization?.let { linkedMapOf("scale" to it.scale, "zero_point" to it.zeroPoint) },
)

private fun manifests(dir: File, output: File) {
    val out = linkedMapOf<String, Any?>()
    for (file in (dir.listFiles() ?: emptyArray()).filter { it.name.endsWith(".json") }.sortedBy { it.name }) {
        out[file.name] = try {
            val m = Manifest.load(file)
            val runtime = try {
                RuntimeKind.forManifest(m).runtimeName
            } catch (err: ManifestException) {
                "unsupported: ${err.message}"
            }
            val artifactPath = m.artifactFile(dir)
            val verify: Any? = if (artifactPath.exists()) {
                try {
                    m.verifyArtifact(dir)
                    "ok"
                } catch (err: ManifestException) {
                    "error: ${err.message}"
                }
            } else {
                null
            }
            linkedMapOf(
                "model" to m.model.name, "task" to m.model.task, "scale" to m.model.scale, "target" to m.target,
                "runtime" to m.backend.runtime, "delegate" to m.backend.delegate, "precision" to m.precision,
                "android_runtime" to runtime,
                "artifact" to linkedMapOf(
                    "file" to m.artifact.file, "format" to m.artifact.format, "bytes" to m.artifact.bytes,
                    "sha256" to m.artifact.sha256, "sha256_method" to m.artifact.sha256Method,
                ),
                "inputs" to m.inputs.map { tensorJson(it) }, "outputs" to m.outputs.map { tensorJson(it) },
                "tiling" to linkedMapOf(
                    "tile" to listOf(m.tiling.tile, m.tiling.tile), "overlap" to m.tiling.overlap, "margin" to m.tiling.margin,
                    "size_multiple" to m.tiling.sizeMultiple, "scale" to m.tiling.scale, "pad_mode" to m.tiling.padMode.jsonName,
                ),
                "dynamic_shapes" to m.dynamicShapes, "provenance" to m.provenance?.toJson(), "verify" to verify,
            )
        } catch (err: ManifestException) {
            linkedMapOf("error" to err.message)
        }
    }
    output.writeText(Json.write(out))
    println("manifests: ${out.size} read")
}

private fun quant(input: File, output: File) {
    val doc = obj(Json.parse(input.readText()))
    val values = FloatArray(arr(doc["values"]).size) { num(arr(doc["values"])[it]).toFloat() }
    val results = ArrayList<Any?>()
    for (item in arr(doc["params"])) {
        val p = obj(item)
        val params = QuantParams(num(p["scale"]), num(p["zero_point"]).toInt())
        val dtype = p["dtype"] as String
        val q = Quantization.quantize(values, params, dtype)
        val stored = q.map { if (dtype == "uint8") it.toInt() and 0xff else it.toInt() }
        val back = Quantization.dequantize(q, params, dtype)
        results.add(linkedMapOf("quantized" to stored, "dequantized" to back.map { it.toDouble() }))
    }
    val shape = arr(doc["chw"]).map { num(it).toInt() }
    val (c, h, w) = Triple(shape[0], shape[1], shape[2])
    val nchw = FloatArray(c * h * w) { it.toFloat() }
    val nhwc = Layouts.nchwToNhwc(nchw, c, h, w)
    val back = Layouts.nhwcToNchw(nhwc, c, h, w)
    val bytes = ByteArray(c * h * w) { it.toByte() }
    val bytesBack = Layouts.nhwcToNchw(Layouts.nchwToNhwc(bytes, c, h, w), c, h, w)
    // TensorCodec on an int8 NHWC tensor (as tests/data/manifests/tflite-int8-nhwc.json)
    val spec = TensorSpec("x", listOf(1, h, w, c), "int8", "NHWC", 0.0 to 1.0, QuantParams(1.0 / 255.0, -128))
    val codec = TensorCodec(spec)
    val levels = FloatArray(c * h * w) { (it % 256) / 255f }
    val encoded = codec.encode(levels) as TensorData.Bytes
    val decoded = codec.decode(encoded)
    results.add(linkedMapOf(
        "nhwc" to nhwc.map { it.toDouble() },
        "nchw_round_trip" to back.contentEquals(nchw),
        "bytes_round_trip" to bytesBack.contentEquals(bytes),
        "codec_encoded" to encoded.values.map { it.toInt() },
        "codec_levels_exact" to (0 until levels.size).all { PlanarImage.toLevel(decoded[it]) == it % 256 },
    ))
    output.writeText(Json.write(results))
    println("quant: ${results.size} blocks")
}

private fun tile(caseFile: File) {
    val case = obj(Json.parse(caseFile.readText()))
    val channels = num(case["channels"]).toInt()
    val height = num(case["height"]).toInt()
    val width = num(case["width"]).toInt()
    val image = PlanarImage(channels, height, width, readF32(File(case["input"] as String)))
    val tileSize = num(case["tile"]).toInt()
    val model = fakeModel(case["model"] as String, tileSize)
    var calls = 0
    val counting = TileModel { calls++; model.run(it) }
    var progress = 0
    val output = Tiler.restore(
        image, counting, tile = tileSize, overlap = num(case["overlap"]).toInt(),
        sizeMultiple = num(case["size_multiple"]).toInt(), scale = num(case["scale"]).toInt(),
        margin = case["margin"]?.let { num(it).toInt() }, onTile = { done, _ -> progress = done },
    )
    writeF32(File(case["output"] as String), output.data)
    val info = linkedMapOf<String, Any?>(
        "channels" to output.channels, "height" to output.height, "width" to output.width,
        "calls" to calls, "progress" to progress, "sha256" to output.sha256(),
    )
    File(case["info"] as String).writeText(Json.write(info))
    println("tile: ${output.width}x${output.height}, $calls tiles")
}

private fun bench(dir: File, runs: Int, warmup: Int, resultsName: String, modelName: String) {
    var now = 1_000_000_000L
    val advances = ArrayList<Long>()
    var step = 0L
    val options = BenchmarkRunner.Options(
        runs = runs, warmup = warmup, resultsName = resultsName, producer = "android_demo 0.1.0 benchmark (core tests)",
        timer = "fake_clock", clock = { now },
    )
    val host = HostInfo(name = "JVM test host", kind = "other", os = System.getProperty("os.name"),
        osVersion = System.getProperty("os.version"), cpu = System.getProperty("os.arch"),
        cores = Runtime.getRuntime().availableProcessors(), soc = null)
    val loadModel = { manifest: Manifest, _: File ->
        val inner = fakeModel(modelName, manifest.tiling.tile)
        object : LoadedModel {
            override val runtime = RuntimeInfo(name = "fake", version = "0", delegate = null, device = "cpu",
                precision = manifest.precision, threads = 1, options = mapOf("model" to modelName))
            override fun run(input: FloatArray): FloatArray {
                // A deterministic "duration": 20 ms plus a spread, so the statistics are not trivial.
                step++
                val advance = 20_000_000L + (step * 7_919_113L) % 9_000_000L
                now += advance
                advances.add(advance)
                return inner.run(input)
            }
            override fun close() {}
        }
    }
    val loadImage = { file: File ->
        val buffered = ImageIO.read(file) ?: throw IllegalArgumentException("cannot decode ${file.name}")
        val pixels = buffered.getRGB(0, 0, buffered.width, buffered.height, null, 0, buffered.width)
        PlanarImage.fromArgb(pixels, buffered.width, buffered.height)
    }
    try {
        BenchmarkRunner.run(dir, options, host, loadModel, loadImage, log = { println("bench: $it") })
        val timed = advances.subList(warmup, warmup + runs).map { it / 1e6 }
        File(dir, "times_ms.json").writeText(Json.write(timed))
        println("bench: ok")
    } catch (err: Throwable) {
        println("bench: failed: ${err.message}")
    }
}

fun main(args: Array<String>) {
    if (args.isEmpty()) {
        System.err.println("usage: CoreTests selftest | plans IN OUT | manifests DIR OUT | quant IN OUT | tile CASE | bench DIR RUNS WARMUP RESULTS MODEL")
        exitProcess(2)
    }
    when (args[0]) {
        "selftest" -> selftest()
        "plans" -> plans(File(args[1]), File(args[2]))
        "manifests" -> manifests(File(args[1]), File(args[2]))
        "quant" -> quant(File(args[1]), File(args[2]))
        "tile" -> tile(File(args[1]))
        "bench" -> bench(File(args[1]), args[2].toInt(), args[3].toInt(), args[4], args[5])
        else -> {
            System.err.println("unknown command ${args[0]}")
            exitProcess(2)
        }
    }
    exitProcess(if (failed == 0) 0 else 1)
}
