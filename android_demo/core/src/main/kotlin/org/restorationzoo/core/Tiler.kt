package org.restorationzoo.core

/**
 * Tiled restoration (zoo.tiling.tiled_forward with batch size 1) and the tensor conversions the
 * runtimes need (NCHW <-> NHWC, int8/uint8 quantization with the manifest's scale/zero point).
 */

/** A float image, planar channel-major (CHW), values normally in [0, 1]. */
class PlanarImage(val channels: Int, val height: Int, val width: Int, val data: FloatArray) {
    init {
        require(channels >= 1 && height >= 1 && width >= 1) { "image must be at least 1x1 with 1 channel" }
        require(data.size == channels * height * width) {
            "image data holds ${data.size} values, expected $channels x $height x $width"
        }
    }

    operator fun get(channel: Int, y: Int, x: Int): Float = data[(channel * height + y) * width + x]

    /**
     * 8-bit RGB bytes, row-major HWC, exactly as zoo.data.io.quantize / results.output_sha256 make
     * them: clamp to [0, 1], times 255 in float32, round half to even. NaN/inf are refused.
     */
    fun toRgbBytes(): ByteArray {
        require(channels == 3) { "toRgbBytes needs 3 channels, the image has $channels" }
        val plane = height * width
        val out = ByteArray(plane * 3)
        for (i in 0 until plane) {
            for (c in 0 until 3) out[i * 3 + c] = toLevel(data[c * plane + i]).toByte()
        }
        return out
    }

    /** Packed ARGB (alpha 255) pixels for android.graphics.Bitmap, quantized like [toRgbBytes]. */
    fun toArgb(): IntArray {
        require(channels == 3) { "toArgb needs 3 channels, the image has $channels" }
        val plane = height * width
        return IntArray(plane) { i ->
            (0xff shl 24) or (toLevel(data[i]) shl 16) or (toLevel(data[plane + i]) shl 8) or toLevel(data[2 * plane + i])
        }
    }

    /** sha256 of [toRgbBytes]: the `output_sha256` of a results record. */
    fun sha256(): String = Sha256.ofBytes(toRgbBytes())

    companion object {
        /** From packed ARGB pixels (android.graphics.Bitmap.getPixels); alpha is dropped, level / 255. */
        fun fromArgb(pixels: IntArray, width: Int, height: Int): PlanarImage {
            require(pixels.size == width * height) { "expected ${width * height} pixels, got ${pixels.size}" }
            val plane = width * height
            val data = FloatArray(3 * plane)
            for (i in 0 until plane) {
                val p = pixels[i]
                data[i] = ((p ushr 16) and 0xff) / 255f
                data[plane + i] = ((p ushr 8) and 0xff) / 255f
                data[2 * plane + i] = (p and 0xff) / 255f
            }
            return PlanarImage(3, height, width, data)
        }

        /** From 8-bit RGB bytes, row-major HWC. */
        fun fromRgbBytes(bytes: ByteArray, width: Int, height: Int): PlanarImage {
            require(bytes.size == width * height * 3) { "expected ${width * height * 3} bytes, got ${bytes.size}" }
            val plane = width * height
            val data = FloatArray(3 * plane)
            for (i in 0 until plane) for (c in 0 until 3) data[c * plane + i] = (bytes[i * 3 + c].toInt() and 0xff) / 255f
            return PlanarImage(3, height, width, data)
        }

        /** clamp(0, 1) * 255 (float32), round half to even: zoo.data.io._unit_to_levels. */
        fun toLevel(value: Float): Int {
            if (value.isNaN() || value.isInfinite()) {
                throw IllegalStateException("the image holds NaN or infinite values and cannot be saved: the model output is broken")
            }
            return Math.rint((value.coerceIn(0f, 1f) * 255f).toDouble()).toInt()
        }
    }
}

/** A model that restores one tile: NCHW float32 1x3xTxT in, 1xCx(T*s)x(T*s) out. */
fun interface TileModel {
    fun run(input: FloatArray): FloatArray
}

/** Thrown when [Tiler.restore] is cancelled through its `isCancelled` callback. */
class TilingCancelledException : RuntimeException("tiling cancelled")

object Tiler {
    /** Restore [image] with the manifest's tiling. */
    fun restore(
        image: PlanarImage,
        model: TileModel,
        tiling: TilingSpec,
        onTile: ((done: Int, total: Int) -> Unit)? = null,
        isCancelled: (() -> Boolean)? = null,
    ): PlanarImage = restore(image, model, tiling.tile, tiling.overlap, tiling.sizeMultiple, tiling.scale, tiling.margin, onTile, isCancelled)

    /**
     * Restore [image] tile by tile (docs/tiling.md step 5): every tile is exactly `tile` x `tile`
     * input pixels read through the padding index map, the outputs are blended with the plan's
     * normalised weights into one float32 result (height and width times [scale]). Pixels of the
     * padding are never stored. Matches zoo.tiling.tiled_forward to float rounding.
     */
    fun restore(
        image: PlanarImage,
        model: TileModel,
        tile: Int,
        overlap: Int,
        sizeMultiple: Int = 1,
        scale: Int = 1,
        margin: Int? = null,
        onTile: ((done: Int, total: Int) -> Unit)? = null,
        isCancelled: (() -> Boolean)? = null,
    ): PlanarImage {
        TilePlan.checkPositive(scale, "scale", "use the model card's scale (1 for restoration, 2/3/4 for SR)")
        val plan = TilePlan.plan(image.height, image.width, tile = tile, overlap = overlap, sizeMultiple = sizeMultiple, margin = margin)
        val rowWeights = plan.axisWeights(Axis.ROWS, scale)
        val colWeights = plan.axisWeights(Axis.COLS, scale)
        val sourceRows = Padding.sourceIndices(image.height, plan.paddedHeight)
        val sourceCols = Padding.sourceIndices(image.width, plan.paddedWidth)
        val channels = image.channels
        val tileOut = tile * scale
        val outHeight = image.height * scale
        val outWidth = image.width * scale
        val input = FloatArray(channels * tile * tile)
        var result: FloatArray? = null
        var outChannels = 0
        val tiles = plan.tiles()
        tiles.forEachIndexed { done, (rowIndex, colIndex, top, left) ->
            if (isCancelled?.invoke() == true) throw TilingCancelledException()
            for (c in 0 until channels) {
                val plane = c * image.height * image.width
                for (y in 0 until tile) {
                    val rowOffset = plane + sourceRows[top + y] * image.width
                    val dst = (c * tile + y) * tile
                    for (x in 0 until tile) input[dst + x] = image.data[rowOffset + sourceCols[left + x]]
                }
            }
            val restored = model.run(input)
            val perChannel = tileOut * tileOut
            if (restored.isEmpty() || restored.size % perChannel != 0) {
                throw IllegalStateException(
                    "the model returned ${restored.size} values for a tile, expected C x $tileOut x $tileOut " +
                        "(check scale and size_multiple against the manifest)",
                )
            }
            val acc = result ?: run {
                outChannels = restored.size / perChannel
                FloatArray(outChannels * outHeight * outWidth).also { result = it }
            }
            if (restored.size != outChannels * perChannel) {
                throw IllegalStateException("the model returned ${restored.size / perChannel} channels, earlier tiles had $outChannels")
            }
            val topOut = top * scale
            val leftOut = left * scale
            val rows = minOf(tileOut, outHeight - topOut)
            val cols = minOf(tileOut, outWidth - leftOut)
            val rw = rowWeights[rowIndex]
            val cw = colWeights[colIndex]
            for (c in 0 until outChannels) {
                for (y in 0 until rows) {
                    val wy = rw[y]
                    val src = (c * tileOut + y) * tileOut
                    val dst = (c * outHeight + topOut + y) * outWidth + leftOut
                    for (x in 0 until cols) {
                        val weight = wy * cw[x] // float32, as torch's row[:, None] * col[None, :]
                        acc[dst + x] = acc[dst + x] + restored[src + x] * weight
                    }
                }
            }
            onTile?.invoke(done + 1, tiles.size)
        }
        return PlanarImage(outChannels, outHeight, outWidth, result!!)
    }
}

/** NCHW <-> NHWC for one image (N = 1). */
object Layouts {
    fun nchwToNhwc(src: FloatArray, channels: Int, height: Int, width: Int): FloatArray {
        require(src.size == channels * height * width) { "expected ${channels * height * width} values, got ${src.size}" }
        val out = FloatArray(src.size)
        val plane = height * width
        for (c in 0 until channels) for (i in 0 until plane) out[i * channels + c] = src[c * plane + i]
        return out
    }

    fun nhwcToNchw(src: FloatArray, channels: Int, height: Int, width: Int): FloatArray {
        require(src.size == channels * height * width) { "expected ${channels * height * width} values, got ${src.size}" }
        val out = FloatArray(src.size)
        val plane = height * width
        for (c in 0 until channels) for (i in 0 until plane) out[c * plane + i] = src[i * channels + c]
        return out
    }

    fun nchwToNhwc(src: ByteArray, channels: Int, height: Int, width: Int): ByteArray {
        require(src.size == channels * height * width) { "expected ${channels * height * width} values, got ${src.size}" }
        val out = ByteArray(src.size)
        val plane = height * width
        for (c in 0 until channels) for (i in 0 until plane) out[i * channels + c] = src[c * plane + i]
        return out
    }

    fun nhwcToNchw(src: ByteArray, channels: Int, height: Int, width: Int): ByteArray {
        require(src.size == channels * height * width) { "expected ${channels * height * width} values, got ${src.size}" }
        val out = ByteArray(src.size)
        val plane = height * width
        for (c in 0 until channels) for (i in 0 until plane) out[c * plane + i] = src[i * channels + c]
        return out
    }
}

/**
 * int8/uint8 tensors: real = scale * (q - zeroPoint), computed in float32 exactly as the desktop
 * runner (export_mobile/targets/tflite.py) does with numpy: q = clip(rint(x / scale) + zeroPoint).
 * Bytes hold int8 as is and uint8 as 0..255 (read back with `and 0xff`).
 */
object Quantization {
    fun range(dtype: String): IntRange = when (dtype) {
        "int8" -> -128..127
        "uint8" -> 0..255
        else -> throw IllegalArgumentException("$dtype is not a quantized dtype (int8, uint8)")
    }

    fun quantize(value: Float, params: QuantParams, dtype: String): Int {
        val limits = range(dtype)
        val scaled = Math.rint((value / params.scale.toFloat()).toDouble()).toFloat() + params.zeroPoint.toFloat()
        return scaled.coerceIn(limits.first.toFloat(), limits.last.toFloat()).toInt()
    }

    fun dequantize(stored: Int, params: QuantParams): Float =
        (stored.toFloat() - params.zeroPoint.toFloat()) * params.scale.toFloat()

    fun quantize(values: FloatArray, params: QuantParams, dtype: String): ByteArray =
        ByteArray(values.size) { quantize(values[it], params, dtype).toByte() }

    fun dequantize(stored: ByteArray, params: QuantParams, dtype: String): FloatArray {
        val unsigned = dtype == "uint8"
        range(dtype)
        return FloatArray(stored.size) {
            val q = if (unsigned) stored[it].toInt() and 0xff else stored[it].toInt()
            dequantize(q, params)
        }
    }
}

/** A tensor's data as the runtime takes it: float32 values or int8/uint8 bytes, in its layout. */
sealed class TensorData {
    class Floats(val values: FloatArray) : TensorData()
    class Bytes(val values: ByteArray) : TensorData()
}

/**
 * Converts between the tiler's NCHW float32 tiles and one artifact tensor (its layout, dtype and
 * quantization from the manifest). float16 I/O is refused: the zoo's exports take float32 or
 * int8 at the boundary.
 */
class TensorCodec(val spec: TensorSpec) {
    init {
        if (spec.dtype == "float16") {
            throw ManifestException("tensor ${spec.name} has float16 I/O, which the Android demo does not feed; export with float32 or int8 I/O")
        }
    }

    private val channels = spec.channels
    private val height = spec.height
    private val width = spec.width

    /** NCHW float32 -> the tensor's layout and dtype. */
    fun encode(nchw: FloatArray): TensorData {
        val laid = if (spec.layout == "NHWC") Layouts.nchwToNhwc(nchw, channels, height, width) else nchw
        return if (spec.isQuantized) TensorData.Bytes(Quantization.quantize(laid, spec.quantization!!, spec.dtype)) else TensorData.Floats(laid)
    }

    /** The tensor's layout and dtype -> NCHW float32. */
    fun decode(data: TensorData): FloatArray {
        val floats = when (data) {
            is TensorData.Floats -> {
                if (spec.isQuantized) throw IllegalStateException("tensor ${spec.name} is ${spec.dtype}, the runtime returned floats")
                data.values
            }
            is TensorData.Bytes -> {
                if (!spec.isQuantized) throw IllegalStateException("tensor ${spec.name} is ${spec.dtype}, the runtime returned bytes")
                Quantization.dequantize(data.values, spec.quantization!!, spec.dtype)
            }
        }
        if (floats.size != spec.elementCount) {
            throw IllegalStateException("tensor ${spec.name}: the runtime returned ${floats.size} values, the manifest says ${spec.shape}")
        }
        return if (spec.layout == "NHWC") Layouts.nhwcToNchw(floats, channels, height, width) else floats
    }
}
