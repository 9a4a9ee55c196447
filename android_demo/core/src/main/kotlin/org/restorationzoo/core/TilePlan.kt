package org.restorationzoo.core

/**
 * The tile plan of docs/tiling.md, a line-by-line port of zoo/tiling.py (`plan_tiles`,
 * `TilePlan.axis_weights`, `_axis_pad_mode`, `_source_indices`).
 *
 * The golden file tests/data/tiling/plans.json (written by zoo.tiling) must be reproduced
 * EXACTLY: starts, padded sizes, padding modes and every float32 weight bit. The weights are
 * computed in Double in the same order of operations as the Python reference, then rounded to
 * Float once, so the results are bit-identical.
 */

/** A user error in the tiling settings: `problem` and `fix` as in zoo's ZooError. */
class TilingException(val problem: String, val fix: String? = null) :
    IllegalArgumentException(if (fix == null) problem else "$problem; $fix")

/** Padding at the bottom/right of the image up to the tile grid. */
enum class PadMode(val jsonName: String) {
    REFLECT("reflect"),
    REPLICATE("replicate");

    companion object {
        fun fromName(name: String): PadMode = values().firstOrNull { it.jsonName == name }
            ?: throw TilingException("unknown padding mode \"$name\"", "use one of reflect, replicate")
    }
}

/** Which axis of the plan: rows (height) or columns (width). */
enum class Axis { ROWS, COLS }

/** One tile: its row/column index in the grid and its top-left corner in the padded image. */
data class Tile(val rowIndex: Int, val colIndex: Int, val top: Int, val left: Int)

object Padding {
    /** `reflect` needs the pad to be shorter than the axis; otherwise replicate (zoo `_axis_pad_mode`). */
    fun axisPadMode(length: Int, paddedLength: Int, mode: PadMode = PadMode.REFLECT): PadMode =
        if (mode == PadMode.REFLECT && paddedLength - length >= length) PadMode.REPLICATE else mode

    /**
     * For each index 0..paddedLength-1 of a padded axis, the image index it is read from:
     * reflect `q -> 2 * (length - 1) - q` past the end (edge pixel not repeated), replicate
     * `q -> length - 1` (zoo `_source_indices`).
     */
    fun sourceIndices(length: Int, paddedLength: Int, mode: PadMode = PadMode.REFLECT): IntArray {
        val reflect = axisPadMode(length, paddedLength, mode) == PadMode.REFLECT
        return IntArray(paddedLength) { q ->
            when {
                q < length -> q
                reflect -> 2 * (length - 1) - q
                else -> length - 1
            }
        }
    }
}

/**
 * Where the tiles of one image go and how they are blended (all lengths in input pixels).
 * Same fields and meaning as zoo.tiling.TilePlan.
 */
class TilePlan(
    val height: Int,
    val width: Int,
    val paddedHeight: Int,
    val paddedWidth: Int,
    val tile: Int,
    /** The overlap actually used: the requested one rounded up to a multiple of sizeMultiple. */
    val overlap: Int,
    val margin: Int,
    val sizeMultiple: Int,
    val rowStarts: IntArray,
    val colStarts: IntArray,
) {
    val stride: Int get() = tile - overlap
    val ramp: Int get() = overlap - 2 * margin
    val numTiles: Int get() = rowStarts.size * colStarts.size

    /** Padding mode used for rows and for columns. */
    val padModes: Pair<PadMode, PadMode>
        get() = Pair(
            Padding.axisPadMode(height, paddedHeight, PadMode.REFLECT),
            Padding.axisPadMode(width, paddedWidth, PadMode.REFLECT),
        )

    /** Every tile in row-major order (the order the reference processes them). */
    fun tiles(): List<Tile> {
        val result = ArrayList<Tile>(numTiles)
        rowStarts.forEachIndexed { i, top -> colStarts.forEachIndexed { j, left -> result.add(Tile(i, j, top, left)) } }
        return result
    }

    /**
     * Normalised 1-D weights along [axis]: one FloatArray of `tile * scale` values per tile;
     * entry `[i][k]` is the weight of output pixel `start_i * scale + k`. Sums to 1 at every pixel.
     */
    fun axisWeights(axis: Axis, scale: Int = 1): Array<FloatArray> {
        checkPositive(scale, "scale", "use the model card's scale (1 for restoration, 2/3/4 for SR)")
        return when (axis) {
            Axis.ROWS -> normalisedAxisWeights(rowStarts, paddedHeight, scale)
            Axis.COLS -> normalisedAxisWeights(colStarts, paddedWidth, scale)
        }
    }

    private fun normalisedAxisWeights(starts: IntArray, paddedLength: Int, scale: Int): Array<FloatArray> {
        val tileOut = tile * scale
        val marginOut = margin * scale
        val rampOut = ramp * scale
        val lengthOut = paddedLength * scale

        // 0 within the margin, then (1, 2, ..., ramp + 1) / (ramp + 1), clamped to [0, 1].
        fun borderRamp(distance: Int): Double =
            ((distance - marginOut + 1).toDouble() / (rampOut + 1).toDouble()).coerceIn(0.0, 1.0)

        val raw = Array(starts.size) { DoubleArray(tileOut) { 1.0 } }
        starts.forEachIndexed { index, start ->
            val startOut = start * scale
            if (startOut > 0) { // a tile border inside the image: ramp; at the image border: weight 1
                for (k in 0 until tileOut) raw[index][k] = raw[index][k] * borderRamp(k)
            }
            if (startOut + tileOut < lengthOut) {
                for (k in 0 until tileOut) raw[index][k] = raw[index][k] * borderRamp(tileOut - 1 - k)
            }
        }
        val total = DoubleArray(lengthOut)
        starts.forEachIndexed { index, start ->
            val offset = start * scale
            for (k in 0 until tileOut) total[offset + k] += raw[index][k]
        }
        for (value in total) check(value > 0.0) { "tile plan leaves pixels without weight" }
        return Array(starts.size) { index ->
            val offset = starts[index] * scale
            FloatArray(tileOut) { k -> (raw[index][k] / total[offset + k]).toFloat() }
        }
    }

    override fun toString(): String =
        "TilePlan(${height}x$width -> ${paddedHeight}x$paddedWidth, tile $tile, overlap $overlap, margin $margin, " +
            "size_multiple $sizeMultiple, rows ${rowStarts.toList()}, cols ${colStarts.toList()})"

    companion object {
        /**
         * Plan tiles of exactly `tile` x `tile` input pixels over a `height` x `width` image
         * (zoo.tiling.plan_tiles). `overlap` is rounded up to a multiple of `sizeMultiple` and must
         * then be less than tile / 2; `margin` defaults to `overlap_used / 2`. Invalid settings
         * raise [TilingException] with the same wording as the Python reference.
         */
        fun plan(height: Int, width: Int, tile: Int, overlap: Int, sizeMultiple: Int = 1, margin: Int? = null): TilePlan {
            checkPositive(height, "image height", "pass an image of at least 1x1 pixel")
            checkPositive(width, "image width", "pass an image of at least 1x1 pixel")
            checkPositive(sizeMultiple, "size_multiple", "use 1, 2, 4, 8, ...")
            checkPositive(tile, "tile", "use a positive multiple of size_multiple $sizeMultiple, e.g. 256")
            if (tile % sizeMultiple != 0) {
                val suggestion = maxOf(sizeMultiple, roundUp(tile, sizeMultiple))
                throw TilingException(
                    "tile $tile is not a multiple of the model's size_multiple $sizeMultiple",
                    "use a multiple of $sizeMultiple, e.g. $suggestion",
                )
            }
            val maxOverlap = maxOverlap(tile, sizeMultiple)
            if (overlap < 0) throw TilingException("overlap $overlap is not an integer >= 0", "use 0 .. $maxOverlap")
            val usedOverlap = roundUp(overlap, sizeMultiple)
            if (2 * usedOverlap >= tile) {
                val rounding = if (usedOverlap != overlap) {
                    " (rounded up to $usedOverlap, a multiple of $sizeMultiple)"
                } else {
                    ""
                }
                throw TilingException(
                    "overlap $overlap$rounding is not less than half the tile $tile",
                    "use overlap 0 .. $maxOverlap or a larger tile",
                )
            }
            val usedMargin = margin ?: (usedOverlap / 2)
            if (usedMargin < 0 || usedMargin > usedOverlap / 2) {
                throw TilingException(
                    "margin $usedMargin is outside 0 .. overlap // 2 = ${usedOverlap / 2}",
                    "use a margin of 0 .. ${usedOverlap / 2} or leave it at the default",
                )
            }
            val paddedHeight = maxOf(roundUp(height, sizeMultiple), tile)
            val paddedWidth = maxOf(roundUp(width, sizeMultiple), tile)
            val stride = tile - usedOverlap
            return TilePlan(
                height = height,
                width = width,
                paddedHeight = paddedHeight,
                paddedWidth = paddedWidth,
                tile = tile,
                overlap = usedOverlap,
                margin = usedMargin,
                sizeMultiple = sizeMultiple,
                rowStarts = axisStarts(paddedHeight, tile, stride),
                colStarts = axisStarts(paddedWidth, tile, stride),
            )
        }

        /** Starts 0, stride, 2*stride, ...; the last one moved back to `paddedLength - tile`. */
        internal fun axisStarts(paddedLength: Int, tile: Int, stride: Int): IntArray {
            if (paddedLength <= tile) return intArrayOf(0)
            val count = ceilDiv(paddedLength - tile, stride) + 1
            return IntArray(count) { index -> minOf(index * stride, paddedLength - tile) }
        }

        /** Largest overlap whose multiple-of-sizeMultiple rounding stays below tile / 2. */
        fun maxOverlap(tile: Int, sizeMultiple: Int): Int = sizeMultiple * ((tile - 1) / (2 * sizeMultiple))

        internal fun roundUp(value: Int, multiple: Int): Int = ceilDiv(value, multiple) * multiple

        private fun ceilDiv(a: Int, b: Int): Int = -Math.floorDiv(-a, b)

        internal fun checkPositive(value: Int, name: String, fix: String) {
            if (value < 1) throw TilingException("$name $value is not a positive integer", fix)
        }
    }
}
