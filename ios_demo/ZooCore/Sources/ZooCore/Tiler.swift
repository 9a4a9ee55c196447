import Foundation

/// A float RGB image in planar (CHW) order, values nominally in [0, 1]: pixel (c, y, x) is
/// `pixels[(c * height + y) * width + x]`. The format the zoo's Python side calls "CHW float32".
public struct PlanarImage: Equatable, Sendable {
    public let channels: Int
    public let height: Int
    public let width: Int
    public var pixels: [Float]

    public init(channels: Int = 3, height: Int, width: Int, pixels: [Float]) throws {
        guard channels >= 1, height >= 1, width >= 1 else {
            throw ZooError("image size \(channels)x\(height)x\(width) is empty", fix: "pass an image of at least 1x1 pixel")
        }
        guard pixels.count == channels * height * width else {
            throw ZooError("image buffer holds \(pixels.count) values, \(channels)x\(height)x\(width) needs \(channels * height * width)")
        }
        self.channels = channels
        self.height = height
        self.width = width
        self.pixels = pixels
    }

    /// A constant image (e.g. the input of a benchmark without photos).
    public init(channels: Int = 3, height: Int, width: Int, repeating value: Float) {
        precondition(channels >= 1 && height >= 1 && width >= 1, "empty image")
        self.channels = channels
        self.height = height
        self.width = width
        self.pixels = [Float](repeating: value, count: channels * height * width)
    }

    @inlinable
    public subscript(channel: Int, y: Int, x: Int) -> Float {
        get { pixels[(channel * height + y) * width + x] }
        set { pixels[(channel * height + y) * width + x] = newValue }
    }

    /// A copy with every value clamped to [0, 1] (as saved images are).
    public func clamped() -> PlanarImage {
        var copy = self
        for index in copy.pixels.indices {
            copy.pixels[index] = min(max(copy.pixels[index], 0), 1)
        }
        return copy
    }

    /// 8-bit RGB bytes, row-major HWC, quantized like a saved 8-bit PNG (zoo.data.io.quantize:
    /// clamp to [0, 1], times 255, round half to even). NaN becomes 0.
    public func rgb8Bytes() -> [UInt8] {
        precondition(channels == 3, "rgb8Bytes needs 3 channels")
        var bytes = [UInt8](repeating: 0, count: height * width * 3)
        let plane = height * width
        pixels.withUnsafeBufferPointer { source in
            for index in 0..<plane {
                for channel in 0..<3 {
                    bytes[index * 3 + channel] = quantizeToByte(source[channel * plane + index])
                }
            }
        }
        return bytes
    }

    /// An image from 8-bit RGB bytes, row-major HWC (value / 255, as zoo.data.io reads 8-bit files).
    public init(rgb8 bytes: [UInt8], height: Int, width: Int) throws {
        guard bytes.count == height * width * 3 else {
            throw ZooError("RGB buffer holds \(bytes.count) bytes, \(height)x\(width)x3 needs \(height * width * 3)")
        }
        let plane = height * width
        var pixels = [Float](repeating: 0, count: plane * 3)
        for index in 0..<plane {
            for channel in 0..<3 {
                pixels[channel * plane + index] = Float(bytes[index * 3 + channel]) / 255
            }
        }
        try self.init(channels: 3, height: height, width: width, pixels: pixels)
    }
}

/// clamp(x, 0, 1) * 255, rounded half to even, as a byte (zoo.data.io._unit_to_levels in float32).
@inlinable
public func quantizeToByte(_ value: Float) -> UInt8 {
    if value.isNaN { return 0 }
    let level = (min(max(value, 0), 1) * 255).rounded(.toNearestOrEven)
    return UInt8(level)
}

/// What the tiler calls for each tile: float32 NCHW 1 x 3 x T x T in [0, 1], returns float32
/// NCHW 1 x 3 x (T*scale) x (T*scale). Runtime adapters (Core ML, ExecuTorch) convert to the
/// artifact's own layout and dtype with `TensorCodec`.
public protocol TileModel {
    func run(_ input: [Float]) throws -> [Float]
}

/// The tiling settings of a manifest (`tiling`), or chosen by hand.
public struct TilingSettings: Equatable, Sendable {
    public var tile: Int
    public var overlap: Int
    public var margin: Int?
    public var sizeMultiple: Int
    public var scale: Int
    public var padMode: PadMode

    public init(tile: Int, overlap: Int, margin: Int? = nil, sizeMultiple: Int = 1, scale: Int = 1, padMode: PadMode = .reflect) {
        self.tile = tile
        self.overlap = overlap
        self.margin = margin
        self.sizeMultiple = sizeMultiple
        self.scale = scale
        self.padMode = padMode
    }

    public init(_ spec: TilingSpec) {
        self.init(tile: spec.tile.first ?? 0, overlap: spec.overlap, margin: spec.margin,
                  sizeMultiple: spec.sizeMultiple, scale: spec.scale, padMode: spec.padMode)
    }
}

/// Restores an image of any size with a fixed-shape model, tile by tile, following the plan of
/// docs/tiling.md (zoo.tiling.tiled_forward with batch size 1): tiles read through the padding
/// index map (no padded copy), outputs blended with the normalised weights into one float32
/// result buffer, pixels of the padding never stored.
///
/// `padMode` is the manifest's `pad_mode`; the zoo always writes `reflect` (what
/// zoo.tiling.tiled_forward does), with the per-axis fall-back to replicate for tiny images.
public struct Tiler: Sendable {
    public let settings: TilingSettings

    public init(settings: TilingSettings) throws {
        guard settings.scale >= 1 else {
            throw ZooError("scale \(settings.scale) is not a positive integer",
                           fix: "use the model card's scale (1 for restoration, 2/3/4 for SR)")
        }
        // Validates tile / overlap / margin / size multiple with the plan's own messages.
        _ = try TilePlan.plan(height: 1, width: 1, tile: settings.tile, overlap: settings.overlap,
                              sizeMultiple: settings.sizeMultiple, margin: settings.margin)
        self.settings = settings
    }

    public init(manifest: Manifest) throws {
        try self.init(settings: TilingSettings(manifest.tiling))
    }

    public var tileOutputSide: Int { settings.tile * settings.scale }

    public func plan(height: Int, width: Int) throws -> TilePlan {
        try TilePlan.plan(height: height, width: width, tile: settings.tile, overlap: settings.overlap,
                          sizeMultiple: settings.sizeMultiple, margin: settings.margin)
    }

    /// The model input for the tile whose top-left corner in the padded image is (top, left):
    /// NCHW 1 x C x T x T, pixels past the image read through the padding index map.
    public func extractTile(from image: PlanarImage, plan: TilePlan, top: Int, left: Int) -> [Float] {
        let rows = sourceIndices(length: image.height, paddedLength: plan.paddedHeight, mode: settings.padMode)
        let cols = sourceIndices(length: image.width, paddedLength: plan.paddedWidth, mode: settings.padMode)
        var buffer = [Float](repeating: 0, count: image.channels * plan.tile * plan.tile)
        fillTile(&buffer, from: image, tile: plan.tile, top: top, left: left, sourceRows: rows, sourceCols: cols)
        return buffer
    }

    func fillTile(_ buffer: inout [Float], from image: PlanarImage, tile: Int, top: Int, left: Int,
                  sourceRows: [Int], sourceCols: [Int]) {
        let inside = top + tile <= image.height && left + tile <= image.width
        image.pixels.withUnsafeBufferPointer { source in
            buffer.withUnsafeMutableBufferPointer { target in
                for channel in 0..<image.channels {
                    let sourcePlane = channel * image.height * image.width
                    let targetPlane = channel * tile * tile
                    for y in 0..<tile {
                        let sourceRow = sourcePlane + (inside ? top + y : sourceRows[top + y]) * image.width
                        let targetRow = targetPlane + y * tile
                        if inside {
                            for x in 0..<tile {
                                target[targetRow + x] = source[sourceRow + left + x]
                            }
                        } else {
                            for x in 0..<tile {
                                target[targetRow + x] = source[sourceRow + sourceCols[left + x]]
                            }
                        }
                    }
                }
            }
        }
    }

    /// Restore `image` (3 channels) with `model`; returns the unclamped float result,
    /// height and width times scale. `progress(done, total)` is called after every tile.
    /// Checks `Task.isCancelled` between tiles (throws CancellationError).
    public func restore(
        _ image: PlanarImage, with model: TileModel, progress: ((Int, Int) -> Void)? = nil
    ) throws -> PlanarImage {
        guard image.channels == 3 else {
            throw ZooError("the image has \(image.channels) channels; the models take RGB", fix: "convert the image to RGB")
        }
        let plan = try self.plan(height: image.height, width: image.width)
        let scale = settings.scale
        let tile = plan.tile
        let tileOut = tile * scale
        let outHeight = image.height * scale
        let outWidth = image.width * scale
        let rowWeights = plan.axisWeights(.rows, scale: scale)
        let colWeights = plan.axisWeights(.cols, scale: scale)
        let sourceRows = sourceIndices(length: image.height, paddedLength: plan.paddedHeight, mode: settings.padMode)
        let sourceCols = sourceIndices(length: image.width, paddedLength: plan.paddedWidth, mode: settings.padMode)
        let channels = image.channels
        let expectedCount = channels * tileOut * tileOut

        var result = [Float](repeating: 0, count: channels * outHeight * outWidth)
        var tileInput = [Float](repeating: 0, count: channels * tile * tile)
        let positions = plan.tiles()
        for (done, position) in positions.enumerated() {
            try Task.checkCancellation()
            fillTile(&tileInput, from: image, tile: tile, top: position.top, left: position.left,
                     sourceRows: sourceRows, sourceCols: sourceCols)
            let output = try model.run(tileInput)
            guard output.count == expectedCount else {
                throw ZooError(
                    "the model returned \(output.count) values for a tile, expected 1x\(channels)x\(tileOut)x\(tileOut)",
                    fix: "check the manifest's tiling.scale and output shape against the artifact")
            }
            // Clip to the unpadded result: pixels of the padding are never stored.
            let topOut = position.top * scale
            let leftOut = position.left * scale
            let rows = min(tileOut, outHeight - topOut)
            let cols = min(tileOut, outWidth - leftOut)
            let rowWeight = rowWeights[position.rowIndex]
            let colWeight = colWeights[position.colIndex]
            output.withUnsafeBufferPointer { restored in
                result.withUnsafeMutableBufferPointer { target in
                    for channel in 0..<channels {
                        let restoredPlane = channel * tileOut * tileOut
                        let targetPlane = channel * outHeight * outWidth
                        for y in 0..<rows {
                            let weightY = rowWeight[y]
                            let restoredRow = restoredPlane + y * tileOut
                            let targetRow = targetPlane + (topOut + y) * outWidth + leftOut
                            for x in 0..<cols {
                                // float32 weight product, then result += value * weight
                                // (torch addcmul_ with row[:, None] * col[None, :]).
                                let weight = weightY * colWeight[x]
                                target[targetRow + x] += restored[restoredRow + x] * weight
                            }
                        }
                    }
                }
            }
            progress?(done + 1, positions.count)
        }
        return try PlanarImage(channels: channels, height: outHeight, width: outWidth, pixels: result)
    }
}

// MARK: - Layout and int8 helpers

/// Converts between the tiler's float32 NCHW tiles and an artifact's own tensor layout and dtype
/// (manifest `inputs[0]` / `outputs[0]`): NHWC transposes, int8/uint8 with
/// real = scale * (q - zero_point), as export_mobile's TFLite runner does.
public enum Layout {
    /// NCHW (1 x C x H x W) to NHWC (1 x H x W x C).
    public static func nchwToNHWC(_ values: [Float], channels: Int, height: Int, width: Int) -> [Float] {
        precondition(values.count == channels * height * width, "buffer size does not match the shape")
        var out = [Float](repeating: 0, count: values.count)
        let plane = height * width
        for channel in 0..<channels {
            for index in 0..<plane {
                out[index * channels + channel] = values[channel * plane + index]
            }
        }
        return out
    }

    /// NHWC (1 x H x W x C) to NCHW (1 x C x H x W).
    public static func nhwcToNCHW(_ values: [Float], channels: Int, height: Int, width: Int) -> [Float] {
        precondition(values.count == channels * height * width, "buffer size does not match the shape")
        var out = [Float](repeating: 0, count: values.count)
        let plane = height * width
        for channel in 0..<channels {
            for index in 0..<plane {
                out[channel * plane + index] = values[index * channels + channel]
            }
        }
        return out
    }
}

/// Affine int8/uint8 quantization of a tensor: real = scale * (q - zeroPoint).
public struct AffineQuantization: Equatable, Sendable {
    public let scale: Float
    public let zeroPoint: Int

    public init(scale: Double, zeroPoint: Int) {
        self.scale = Float(scale)
        self.zeroPoint = zeroPoint
    }

    public init(_ spec: TensorQuantization) {
        self.init(scale: spec.scale, zeroPoint: spec.zeroPoint)
    }

    /// clip(round_half_even(x / scale) + zero_point) like numpy in export_mobile's runner; NaN
    /// becomes the zero point (real value 0).
    public func quantize(_ value: Float, min lower: Float, max upper: Float) -> Float {
        if value.isNaN { return Float(zeroPoint) }
        let level = (value / scale).rounded(.toNearestOrEven) + Float(zeroPoint)
        return Swift.min(Swift.max(level, lower), upper)
    }

    public func quantizeInt8(_ values: [Float]) -> [Int8] {
        values.map { Int8(quantize($0, min: -128, max: 127)) }
    }

    public func quantizeUInt8(_ values: [Float]) -> [UInt8] {
        values.map { UInt8(quantize($0, min: 0, max: 255)) }
    }

    /// (q - zero_point) * scale in float32.
    public func dequantize(_ values: [Int8]) -> [Float] {
        values.map { (Float($0) - Float(zeroPoint)) * scale }
    }

    public func dequantize(_ values: [UInt8]) -> [Float] {
        values.map { (Float($0) - Float(zeroPoint)) * scale }
    }
}

/// A tensor in an artifact's own dtype, element order = the tensor's `layout`.
public enum EncodedTensor: Equatable, Sendable {
    /// float32 or float16 tensors (runtimes convert to half precision themselves).
    case float([Float])
    case int8([Int8])
    case uint8([UInt8])

    public var count: Int {
        switch self {
        case .float(let values): return values.count
        case .int8(let values): return values.count
        case .uint8(let values): return values.count
        }
    }
}

/// Encodes a tiler tile (float32 NCHW) for one of the manifest's tensors and decodes an
/// artifact's output back to float32 NCHW.
public struct TensorCodec: Sendable {
    public let spec: TensorSpec
    public let channels: Int
    public let height: Int
    public let width: Int

    public init(_ spec: TensorSpec) throws {
        guard spec.shape.count == 4, spec.shape[0] == 1 else {
            throw ZooError("tensor \(spec.name) has shape \(spec.shape); the app needs a batch-1 4-D image tensor")
        }
        let dims: (channels: Int, height: Int, width: Int)
        switch spec.layout {
        case .nchw:
            dims = (spec.shape[1], spec.shape[2], spec.shape[3])
        case .nhwc:
            dims = (spec.shape[3], spec.shape[1], spec.shape[2])
        }
        guard dims.channels >= 1, dims.height >= 1, dims.width >= 1 else {
            throw ZooError("tensor \(spec.name) has a dynamic or empty shape \(spec.shape)", fix: "export with a fixed --tile")
        }
        if spec.dtype.isQuantized && spec.quantization == nil {
            throw ZooError("tensor \(spec.name) is \(spec.dtype.rawValue) without quantization parameters",
                           fix: "re-export it with `zoo export`")
        }
        self.spec = spec
        self.channels = dims.channels
        self.height = dims.height
        self.width = dims.width
    }

    public var count: Int { channels * height * width }

    /// float32 NCHW -> the tensor's layout and dtype.
    public func encode(nchw values: [Float]) throws -> EncodedTensor {
        guard values.count == count else {
            throw ZooError("tile holds \(values.count) values, tensor \(spec.name) takes \(count)")
        }
        let ordered = spec.layout == .nhwc
            ? Layout.nchwToNHWC(values, channels: channels, height: height, width: width) : values
        switch spec.dtype {
        case .float32, .float16:
            return .float(ordered)
        case .int8:
            return .int8(AffineQuantization(spec.quantization!).quantizeInt8(ordered))
        case .uint8:
            return .uint8(AffineQuantization(spec.quantization!).quantizeUInt8(ordered))
        }
    }

    /// The tensor's layout and dtype -> float32 NCHW.
    public func decode(_ tensor: EncodedTensor) throws -> [Float] {
        guard tensor.count == count else {
            throw ZooError("tensor \(spec.name) returned \(tensor.count) values, the manifest's shape \(spec.shape) has \(count)",
                           fix: "check the manifest against the artifact")
        }
        let values: [Float]
        switch tensor {
        case .float(let floats):
            values = floats
        case .int8(let ints):
            guard let quantization = spec.quantization else {
                throw ZooError("tensor \(spec.name) returned int8 without quantization parameters in the manifest")
            }
            values = AffineQuantization(quantization).dequantize(ints)
        case .uint8(let ints):
            guard let quantization = spec.quantization else {
                throw ZooError("tensor \(spec.name) returned uint8 without quantization parameters in the manifest")
            }
            values = AffineQuantization(quantization).dequantize(ints)
        }
        return spec.layout == .nhwc
            ? Layout.nhwcToNCHW(values, channels: channels, height: height, width: width) : values
    }
}

/// IEEE 754 half precision (bit pattern) to Float, exactly; for float16 outputs (Core ML
/// MLMultiArray .float16) without relying on the Float16 type, which macOS on Intel lacks.
public func halfToFloat(_ bits: UInt16) -> Float {
    let sign: UInt32 = UInt32(bits & 0x8000) << 16
    let exponent = Int((bits >> 10) & 0x1f)
    let mantissa = UInt32(bits & 0x03ff)
    if exponent == 0 {
        // Zero or subnormal: mantissa * 2^-24.
        let magnitude = Float(mantissa) / 16_777_216
        return sign != 0 ? -magnitude : magnitude
    }
    if exponent == 31 {
        // inf (mantissa 0) or NaN.
        return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
    }
    return Float(bitPattern: sign | (UInt32(exponent - 15 + 127) << 23) | (mantissa << 13))
}
