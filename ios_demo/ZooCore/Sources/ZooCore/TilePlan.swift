import Foundation

// The tile plan of docs/tiling.md, line for line the same as zoo/tiling.py (`plan_tiles`,
// `TilePlan.axis_weights`, `_axis_pad_mode`, `_source_indices`): the same padding, tile starts
// and blend weights (computed in Double, stored as Float, like the float64 -> float32 of the
// Python reference), so the app and `zoo run` give the same pixels. The golden plans of
// tests/data/tiling/plans.json are checked by ZooCoreTests.

// json-schema-enum: manifest.schema.json#/properties/tiling/properties/pad_mode
public enum PadMode: String, CaseIterable, Codable, Sendable {
    /// Mirror without repeating the edge pixel (numpy `reflect`, torch `F.pad(mode="reflect")`).
    case reflect = "reflect"
    /// Repeat the edge pixel (numpy `edge`).
    case replicate = "replicate"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

/// `reflect` needs the pad to be shorter than the axis; otherwise replicate (zoo.tiling._axis_pad_mode).
public func axisPadMode(length: Int, paddedLength: Int, mode: PadMode) -> PadMode {
    if mode == .reflect && paddedLength - length >= length {
        return .replicate
    }
    return mode
}

/// For each index 0 ..< paddedLength of a padded axis, the image index it is read from
/// (zoo.tiling._source_indices): `q` inside the image, `2 * (length - 1) - q` past the end for
/// reflect, `length - 1` for replicate.
public func sourceIndices(length: Int, paddedLength: Int, mode: PadMode) -> [Int] {
    let reflect = axisPadMode(length: length, paddedLength: paddedLength, mode: mode) == .reflect
    return (0..<paddedLength).map { q in
        if q < length { return q }
        return reflect ? 2 * (length - 1) - q : length - 1
    }
}

/// One tile: its row and column index in the grid and its top-left corner in the padded image.
public struct TilePosition: Equatable, Sendable {
    public let rowIndex: Int
    public let colIndex: Int
    public let top: Int
    public let left: Int
}

public enum TileAxis: String, Sendable {
    case rows
    case cols
}

/// Where the tiles of one image go and how they are blended (lengths in input pixels); see
/// zoo.tiling.TilePlan. The image is padded at the bottom/right to paddedHeight x paddedWidth
/// (multiples of sizeMultiple, at least one tile); tile (i, j) covers rows
/// rowStarts[i] ..< rowStarts[i] + tile and columns colStarts[j] ..< colStarts[j] + tile.
public struct TilePlan: Equatable, Sendable {
    public let height: Int
    public let width: Int
    public let paddedHeight: Int
    public let paddedWidth: Int
    public let tile: Int
    /// The overlap actually used: the requested one rounded up to a multiple of sizeMultiple.
    public let overlap: Int
    public let margin: Int
    public let sizeMultiple: Int
    public let rowStarts: [Int]
    public let colStarts: [Int]

    /// Distance between the starts of neighbouring tiles (the last tile may be closer).
    public var stride: Int { tile - overlap }

    /// Width of the linear weight ramp after the zero-weight margin.
    public var ramp: Int { overlap - 2 * margin }

    public var numTiles: Int { rowStarts.count * colStarts.count }

    /// Padding mode used for rows and columns when the requested mode is `base` (reflect falls
    /// back to replicate on an axis whose pad is not shorter than the axis).
    public func padModes(base: PadMode = .reflect) -> (rows: PadMode, cols: PadMode) {
        (axisPadMode(length: height, paddedLength: paddedHeight, mode: base),
         axisPadMode(length: width, paddedLength: paddedWidth, mode: base))
    }

    /// Every tile in row-major order (for each row start, for each column start).
    public func tiles() -> [TilePosition] {
        var result: [TilePosition] = []
        result.reserveCapacity(numTiles)
        for (rowIndex, top) in rowStarts.enumerated() {
            for (colIndex, left) in colStarts.enumerated() {
                result.append(TilePosition(rowIndex: rowIndex, colIndex: colIndex, top: top, left: left))
            }
        }
        return result
    }

    /// Normalised 1-D weights of the tiles along `axis` at output resolution: entry [i][k] is the
    /// weight of output pixel `start_i * scale + k` (k < tile * scale). Along each axis the
    /// weights of all tiles sum to 1 at every pixel; the 2-D weight of tile (i, j) is
    /// rows[i][y] * cols[j][x].
    public func axisWeights(_ axis: TileAxis, scale: Int = 1) -> [[Float]] {
        switch axis {
        case .rows:
            return TilePlan.normalisedAxisWeights(
                starts: rowStarts, paddedLength: paddedHeight, tile: tile, margin: margin, ramp: ramp, scale: scale)
        case .cols:
            return TilePlan.normalisedAxisWeights(
                starts: colStarts, paddedLength: paddedWidth, tile: tile, margin: margin, ramp: ramp, scale: scale)
        }
    }

    /// Plan tiles of exactly `tile` x `tile` input pixels over a `height` x `width` image
    /// (zoo.tiling.plan_tiles, same checks and messages). `overlap` is rounded up to a multiple
    /// of `sizeMultiple` and must then be less than tile / 2; `margin` defaults to overlap / 2.
    public static func plan(
        height: Int, width: Int, tile: Int, overlap: Int, sizeMultiple: Int = 1, margin: Int? = nil
    ) throws -> TilePlan {
        guard height >= 1 else {
            throw ZooError("image height \(height) is not a positive integer", fix: "pass an image of at least 1x1 pixel")
        }
        guard width >= 1 else {
            throw ZooError("image width \(width) is not a positive integer", fix: "pass an image of at least 1x1 pixel")
        }
        guard sizeMultiple >= 1 else {
            throw ZooError("size_multiple \(sizeMultiple) is not a positive integer", fix: "use 1, 2, 4, 8, ...")
        }
        guard tile >= 1 else {
            throw ZooError("tile \(tile) is not a positive integer",
                           fix: "use a positive multiple of size_multiple \(sizeMultiple), e.g. 256")
        }
        guard tile % sizeMultiple == 0 else {
            let suggestion = max(sizeMultiple, roundUp(tile, sizeMultiple))
            throw ZooError("tile \(tile) is not a multiple of the model's size_multiple \(sizeMultiple)",
                           fix: "use a multiple of \(sizeMultiple), e.g. \(suggestion)")
        }
        let maxOverlap = sizeMultiple * ((tile - 1) / (2 * sizeMultiple))
        guard overlap >= 0 else {
            throw ZooError("overlap \(overlap) is not an integer >= 0", fix: "use 0 .. \(maxOverlap)")
        }
        let usedOverlap = roundUp(overlap, sizeMultiple)
        guard 2 * usedOverlap < tile else {
            let rounding = usedOverlap != overlap
                ? " (rounded up to \(usedOverlap), a multiple of \(sizeMultiple))" : ""
            throw ZooError("overlap \(overlap)\(rounding) is not less than half the tile \(tile)",
                           fix: "use overlap 0 .. \(maxOverlap) or a larger tile")
        }
        let usedMargin = margin ?? usedOverlap / 2
        guard usedMargin >= 0, usedMargin <= usedOverlap / 2 else {
            throw ZooError("margin \(usedMargin) is outside 0 .. overlap // 2 = \(usedOverlap / 2)",
                           fix: "use a margin of 0 .. \(usedOverlap / 2) or leave it at the default")
        }
        let paddedHeight = max(roundUp(height, sizeMultiple), tile)
        let paddedWidth = max(roundUp(width, sizeMultiple), tile)
        let stride = tile - usedOverlap
        return TilePlan(
            height: height, width: width, paddedHeight: paddedHeight, paddedWidth: paddedWidth,
            tile: tile, overlap: usedOverlap, margin: usedMargin, sizeMultiple: sizeMultiple,
            rowStarts: axisStarts(paddedLength: paddedHeight, tile: tile, stride: stride),
            colStarts: axisStarts(paddedLength: paddedWidth, tile: tile, stride: stride))
    }

    /// Starts 0, stride, 2 * stride, ...; the last one moved back to paddedLength - tile.
    static func axisStarts(paddedLength: Int, tile: Int, stride: Int) -> [Int] {
        if paddedLength <= tile {
            return [0]
        }
        // ceil((paddedLength - tile) / stride) + 1, in integers.
        let count = (paddedLength - tile + stride - 1) / stride + 1
        return (0..<count).map { min($0 * stride, paddedLength - tile) }
    }

    static func normalisedAxisWeights(
        starts: [Int], paddedLength: Int, tile: Int, margin: Int, ramp: Int, scale: Int
    ) -> [[Float]] {
        // At output resolution: every length times scale (docs/tiling.md, step 4).
        let tileOut = tile * scale
        let marginOut = Double(margin * scale)
        let rampOut = Double(ramp * scale)
        let lengthOut = paddedLength * scale

        // 0 within the margin, then (1, 2, ..., ramp + 1) / (ramp + 1), clamped to [0, 1].
        func borderRamp(_ distance: Int) -> Double {
            let value = (Double(distance) - marginOut + 1.0) / (rampOut + 1.0)
            return min(max(value, 0.0), 1.0)
        }

        var raw = [[Double]](repeating: [Double](repeating: 1.0, count: tileOut), count: starts.count)
        for (index, start) in starts.enumerated() {
            let startOut = start * scale
            if startOut > 0 {  // a tile border inside the image: ramp; at the image border: weight 1
                for k in 0..<tileOut {
                    raw[index][k] *= borderRamp(k)
                }
            }
            if startOut + tileOut < lengthOut {
                for k in 0..<tileOut {
                    raw[index][k] *= borderRamp(tileOut - 1 - k)
                }
            }
        }
        var total = [Double](repeating: 0.0, count: lengthOut)
        for (index, start) in starts.enumerated() {
            for k in 0..<tileOut {
                total[start * scale + k] += raw[index][k]
            }
        }
        // overlap >= 2 * margin puts every pixel at least margin inside some tile.
        precondition(total.allSatisfy { $0 > 0 }, "tile plan leaves pixels without weight")
        return starts.enumerated().map { index, start in
            (0..<tileOut).map { k in Float(raw[index][k] / total[start * scale + k]) }
        }
    }
}

func roundUp(_ value: Int, _ multiple: Int) -> Int {
    // -(-value // multiple) * multiple for value >= 0 (Python's _round_up).
    ((value + multiple - 1) / multiple) * multiple
}
