import XCTest
@testable import ZooCore

/// Returns its input (scale 1) or its nearest-neighbour upsampling (scale > 1): a model with
/// receptive-field radius 0, for which tiling must be exact.
final class NearestModel: TileModel {
    let tile: Int
    let scale: Int
    private(set) var calls = 0

    init(tile: Int, scale: Int = 1) {
        self.tile = tile
        self.scale = scale
    }

    func run(_ input: [Float]) throws -> [Float] {
        calls += 1
        precondition(input.count == 3 * tile * tile, "wrong tile size")
        if scale == 1 { return input }
        let side = tile * scale
        var output = [Float](repeating: 0, count: 3 * side * side)
        for channel in 0..<3 {
            for y in 0..<side {
                for x in 0..<side {
                    output[(channel * side + y) * side + x] = input[(channel * tile + y / scale) * tile + x / scale]
                }
            }
        }
        return output
    }
}

/// A 3x3 box blur with edge clamping inside the tile: radius 1.
final class BoxBlurModel: TileModel {
    let tile: Int
    init(tile: Int) { self.tile = tile }

    func run(_ input: [Float]) throws -> [Float] {
        var output = [Float](repeating: 0, count: input.count)
        for channel in 0..<3 {
            for y in 0..<tile {
                for x in 0..<tile {
                    var sum: Float = 0
                    for dy in -1...1 {
                        for dx in -1...1 {
                            let yy = min(max(y + dy, 0), tile - 1)
                            let xx = min(max(x + dx, 0), tile - 1)
                            sum += input[(channel * tile + yy) * tile + xx]
                        }
                    }
                    output[(channel * tile + y) * tile + x] = sum / 9
                }
            }
        }
        return output
    }
}

func patternImage(height: Int, width: Int) throws -> PlanarImage {
    var pixels = [Float](repeating: 0, count: 3 * height * width)
    for channel in 0..<3 {
        for y in 0..<height {
            for x in 0..<width {
                // Deterministic, varied values in [0, 1].
                let value = Float((channel * 7919 + y * 104_729 + x * 1_299_709) % 1000) / 999
                pixels[(channel * height + y) * width + x] = value
            }
        }
    }
    return try PlanarImage(height: height, width: width, pixels: pixels)
}

final class TilerTests: XCTestCase {
    /// The weights sum to 1 at every pixel, so an identity model returns its input, for any
    /// image size (tiny images padded with replicate, large ones with reflect).
    func testIdentityModelReproducesTheInput() throws {
        for (height, width, tile, overlap, multiple) in [
            (203, 157, 64, 8, 1), (5, 3, 16, 4, 1), (64, 64, 64, 16, 16), (100, 37, 32, 12, 4), (1, 1, 8, 2, 1),
        ] {
            let image = try patternImage(height: height, width: width)
            let tiler = try Tiler(settings: TilingSettings(tile: tile, overlap: overlap, sizeMultiple: multiple))
            let model = NearestModel(tile: tile)
            let restored = try tiler.restore(image, with: model)
            XCTAssertEqual(restored.height, height)
            XCTAssertEqual(restored.width, width)
            let worst = zip(restored.pixels, image.pixels).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThan(worst, 1e-6, "\(height)x\(width) tile \(tile): identity differs by \(worst)")
            XCTAssertEqual(model.calls, try tiler.plan(height: height, width: width).numTiles)
        }
    }

    func testSuperResolutionTilingIsExactForALocalModel() throws {
        let image = try patternImage(height: 45, width: 70)
        let tiler = try Tiler(settings: TilingSettings(tile: 16, overlap: 4, scale: 3))
        let restored = try tiler.restore(image, with: NearestModel(tile: 16, scale: 3))
        XCTAssertEqual(restored.height, 135)
        XCTAssertEqual(restored.width, 210)
        var worst: Float = 0
        for channel in 0..<3 {
            for y in 0..<135 {
                for x in 0..<210 {
                    worst = max(worst, abs(restored[channel, y, x] - image[channel, y / 3, x / 3]))
                }
            }
        }
        XCTAssertLessThan(worst, 1e-6)
    }

    /// A radius-1 model tiled with margin >= 1 equals the model run on the whole image
    /// (docs/tiling.md "Why this is exact"), including the reflect padding at the borders.
    func testRadiusOneModelIsExactWithOverlapTwo() throws {
        let image = try patternImage(height: 40, width: 40)
        let whole = try Tiler(settings: TilingSettings(tile: 40, overlap: 0)).restore(image, with: BoxBlurModel(tile: 40))
        let tiled = try Tiler(settings: TilingSettings(tile: 16, overlap: 2)).restore(image, with: BoxBlurModel(tile: 16))
        // 40 needs no padding, so the tiles' outer borders are the image's borders and the
        // model's edge clamping agrees there too: equal everywhere.
        var worst: Float = 0
        for channel in 0..<3 {
            for y in 0..<40 {
                for x in 0..<40 {
                    worst = max(worst, abs(tiled[channel, y, x] - whole[channel, y, x]))
                }
            }
        }
        XCTAssertLessThan(worst, 1e-5)
    }

    func testTileExtractionReadsThroughThePaddingMap() throws {
        let image = try patternImage(height: 5, width: 6)
        let tiler = try Tiler(settings: TilingSettings(tile: 8, overlap: 2))
        let plan = try tiler.plan(height: 5, width: 6)
        XCTAssertEqual(plan.paddedHeight, 8)
        let tile = tiler.extractTile(from: image, plan: plan, top: 0, left: 0)
        // rows: 5 -> 8 is a pad of 3 < 5: reflect (0 1 2 3 4 3 2 1); cols: 6 -> 8: reflect (.. 5 4 3)
        let rows = [0, 1, 2, 3, 4, 3, 2, 1]
        let cols = [0, 1, 2, 3, 4, 5, 4, 3]
        for channel in 0..<3 {
            for y in 0..<8 {
                for x in 0..<8 {
                    XCTAssertEqual(tile[(channel * 8 + y) * 8 + x], image[channel, rows[y], cols[x]])
                }
            }
        }
    }

    func testWrongOutputSizeIsReported() throws {
        let tiler = try Tiler(settings: TilingSettings(tile: 8, overlap: 2, scale: 2))
        XCTAssertThrowsError(try tiler.restore(try patternImage(height: 8, width: 8), with: NearestModel(tile: 8))) { error in
            XCTAssertTrue("\(error)".contains("expected 1x3x16x16"), "\(error)")
        }
    }

    func testProgressCountsTiles() throws {
        let tiler = try Tiler(settings: TilingSettings(tile: 16, overlap: 4))
        var reports: [Int] = []
        _ = try tiler.restore(try patternImage(height: 28, width: 28), with: NearestModel(tile: 16)) { done, total in
            reports.append(done)
            XCTAssertEqual(total, 4)
        }
        XCTAssertEqual(reports, [1, 2, 3, 4])
    }

    // MARK: - Layout, int8, 8-bit output

    func testLayoutRoundTrip() throws {
        let values = (0..<(3 * 4 * 5)).map { Float($0) }
        let nhwc = Layout.nchwToNHWC(values, channels: 3, height: 4, width: 5)
        XCTAssertEqual(Array(nhwc[0..<6]), [0, 20, 40, 1, 21, 41])
        XCTAssertEqual(Layout.nhwcToNCHW(nhwc, channels: 3, height: 4, width: 5), values)
    }

    /// int8 with scale 1/255, zero point -128 (tests/data/manifests/tflite-int8-nhwc.json):
    /// every 8-bit level survives the round trip.
    func testInt8QuantizationLikeTheTFLiteRunner() {
        let quantization = AffineQuantization(scale: 1.0 / 255.0, zeroPoint: -128)
        let levels = (0...255).map { Float($0) / 255 }
        let quantized = quantization.quantizeInt8(levels)
        XCTAssertEqual(quantized.first, -128)
        XCTAssertEqual(quantized.last, 127)
        let restored = quantization.dequantize(quantized)
        for (value, back) in zip(levels, restored) {
            XCTAssertEqual(value, back, accuracy: 1e-6)
        }
        XCTAssertEqual(quantization.quantizeInt8([-1, 2, .nan]), [-128, 127, -128])
    }

    func testTensorCodecForNHWCInt8() throws {
        let spec = TensorSpec(name: "x", shape: [1, 2, 2, 3], dtype: .int8, layout: .nhwc, color: "RGB",
                              valueRange: [0, 1], quantization: TensorQuantization(scale: 1.0 / 255.0, zeroPoint: -128))
        let codec = try TensorCodec(spec)
        let nchw: [Float] = (0..<12).map { Float($0 * 20) / 255 }
        let encoded = try codec.encode(nchw: nchw)
        guard case .int8(let values) = encoded else { return XCTFail("expected int8") }
        XCTAssertEqual(values.count, 12)
        XCTAssertEqual(values[0], -128)  // (c0, y0, x0) = 0
        XCTAssertEqual(values[1], Int8(4 * 20 - 128))  // (c1, y0, x0) = index 4 of NCHW
        let decoded = try codec.decode(encoded)
        for (value, back) in zip(nchw, decoded) {
            XCTAssertEqual(value, back, accuracy: 1e-6)
        }
    }

    /// The sha256 below was computed with measure.results.output_sha256 on the same image
    /// (values k / 512, some outside [0, 1], one exactly halfway between two 8-bit levels).
    func testOutputHashMatchesPython() throws {
        var pixels = [Float](repeating: 0, count: 3 * 5 * 7)
        for channel in 0..<3 {
            for y in 0..<5 {
                for x in 0..<7 {
                    let k = (channel * 97 + y * 31 + x * 13) * 2 - 50
                    pixels[(channel * 5 + y) * 7 + x] = Float(k) / 512
                }
            }
        }
        pixels[0] = 256.0 / 512.0  // 127.5 -> 128 (half to even)
        let image = try PlanarImage(height: 5, width: 7, pixels: pixels)
        XCTAssertEqual(Array(image.rgb8Bytes()[0..<9]), [128, 72, 168, 0, 85, 181, 1, 98, 194])
        XCTAssertEqual(outputSHA256(image), "379e1ff292f2718a7b5be42a4cbd31af2d91faad10034ab49111c93b53af8621")
    }

    func testHalfToFloat() {
        XCTAssertEqual(halfToFloat(0x3C00), 1.0)
        XCTAssertEqual(halfToFloat(0xC000), -2.0)
        XCTAssertEqual(halfToFloat(0x3555), 0.333251953125)
        XCTAssertEqual(halfToFloat(0x7BFF), 65504.0)
        XCTAssertEqual(halfToFloat(0x0001), 5.960464477539063e-08)  // smallest subnormal, 2^-24
        XCTAssertEqual(halfToFloat(0x8000), -0.0)
        XCTAssertEqual(halfToFloat(0x7C00), .infinity)
        XCTAssertTrue(halfToFloat(0x7E00).isNaN)
    }

    func testQuantizeToByteRoundsHalfToEven() {
        XCTAssertEqual(quantizeToByte(0.5), 128)  // 127.5 -> 128
        XCTAssertEqual(quantizeToByte(-0.2), 0)
        XCTAssertEqual(quantizeToByte(1.7), 255)
        XCTAssertEqual(quantizeToByte(.nan), 0)
        XCTAssertEqual(quantizeToByte(Float(3) / 255), 3)
    }
}
