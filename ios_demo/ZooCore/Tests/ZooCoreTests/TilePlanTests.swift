import XCTest
@testable import ZooCore

/// One entry of tests/data/tiling/plans.json, written by the Python reference (zoo/tiling.py).
struct GoldenPlan: Decodable {
    let height: Int
    let width: Int
    let tile: Int
    let overlap: Int
    let sizeMultiple: Int?
    let scale: Int?
    let margin: Int?
    let paddedHeight: Int
    let paddedWidth: Int
    let padModes: [String]
    let rowStarts: [Int]
    let colStarts: [Int]
    let rowWeights: [[Double]]
    let colWeights: [[Double]]

    enum CodingKeys: String, CodingKey {
        case height = "height"
        case width = "width"
        case tile = "tile"
        case overlap = "overlap"
        case sizeMultiple = "size_multiple"
        case scale = "scale"
        case margin = "margin"
        case paddedHeight = "padded_height"
        case paddedWidth = "padded_width"
        case padModes = "pad_modes"
        case rowStarts = "row_starts"
        case colStarts = "col_starts"
        case rowWeights = "row_weights"
        case colWeights = "col_weights"
    }
}

final class TilePlanTests: XCTestCase {
    /// Every golden plan of the Python reference: padding, pad modes, starts and weights
    /// (within 1e-6).
    func testGoldenPlansFromPython() throws {
        let data = try RepoFiles.data("tests/data/tiling/plans.json")
        let plans = try JSONDecoder().decode([GoldenPlan].self, from: data)
        XCTAssertFalse(plans.isEmpty, "plans.json holds no plans")
        for golden in plans {
            let label = "\(golden.height)x\(golden.width) tile \(golden.tile) overlap \(golden.overlap) m \(golden.sizeMultiple ?? 1) s \(golden.scale ?? 1) margin \(golden.margin.map { String($0) } ?? "default")"
            let plan = try TilePlan.plan(
                height: golden.height, width: golden.width, tile: golden.tile, overlap: golden.overlap,
                sizeMultiple: golden.sizeMultiple ?? 1, margin: golden.margin)
            XCTAssertEqual(plan.paddedHeight, golden.paddedHeight, label)
            XCTAssertEqual(plan.paddedWidth, golden.paddedWidth, label)
            XCTAssertEqual(plan.rowStarts, golden.rowStarts, label)
            XCTAssertEqual(plan.colStarts, golden.colStarts, label)
            let modes = plan.padModes()
            XCTAssertEqual([modes.rows.rawValue, modes.cols.rawValue], golden.padModes, label)
            let scale = golden.scale ?? 1
            assertWeights(plan.axisWeights(.rows, scale: scale), golden.rowWeights, "\(label) rows")
            assertWeights(plan.axisWeights(.cols, scale: scale), golden.colWeights, "\(label) cols")
        }
    }

    private func assertWeights(_ actual: [[Float]], _ expected: [[Double]], _ label: String,
                               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, "\(label): number of tiles", file: file, line: line)
        for (index, (row, goldenRow)) in zip(actual, expected).enumerated() {
            XCTAssertEqual(row.count, goldenRow.count, "\(label) tile \(index): length", file: file, line: line)
            let worst = zip(row, goldenRow).map { abs(Double($0) - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 1e-6, "\(label) tile \(index): weights differ by \(worst)", file: file, line: line)
        }
    }

    /// The worked example of docs/tiling.md: 203 x 157, T = 64, O = 8.
    func testWorkedExampleOfTheSpec() throws {
        let plan = try TilePlan.plan(height: 203, width: 157, tile: 64, overlap: 8)
        XCTAssertEqual(plan.overlap, 8)
        XCTAssertEqual(plan.margin, 4)
        XCTAssertEqual(plan.ramp, 0)
        XCTAssertEqual(plan.stride, 56)
        XCTAssertEqual(plan.paddedHeight, 203)
        XCTAssertEqual(plan.paddedWidth, 157)
        XCTAssertEqual(plan.rowStarts, [0, 56, 112, 139])
        XCTAssertEqual(plan.colStarts, [0, 56, 93])
        XCTAssertEqual(plan.numTiles, 12)
        let rows = plan.axisWeights(.rows)
        // tile 0 (rows 0..63): 1 for rows 0..59, 0 for 60..63
        XCTAssertEqual(Array(rows[0][0..<60]), [Float](repeating: 1, count: 60))
        XCTAssertEqual(Array(rows[0][60..<64]), [Float](repeating: 0, count: 4))
        // tile 2 (rows 112..175): 0 for 112..115, 1 for 116..142, 0.5 for 143..171, 0 for 172..175
        XCTAssertEqual(Array(rows[2][0..<4]), [Float](repeating: 0, count: 4))
        XCTAssertEqual(Array(rows[2][4..<31]), [Float](repeating: 1, count: 27))
        XCTAssertEqual(Array(rows[2][31..<60]), [Float](repeating: 0.5, count: 29))
        XCTAssertEqual(Array(rows[2][60..<64]), [Float](repeating: 0, count: 4))
        // tile 3 (rows 139..202): 0 for 139..142, 0.5 for 143..171, 1 up to the image border
        XCTAssertEqual(Array(rows[3][0..<4]), [Float](repeating: 0, count: 4))
        XCTAssertEqual(Array(rows[3][4..<33]), [Float](repeating: 0.5, count: 29))
        XCTAssertEqual(Array(rows[3][33..<64]), [Float](repeating: 1, count: 31))
        assertSumsToOne(starts: plan.rowStarts, weights: rows, length: plan.paddedHeight, scale: 1)
        assertSumsToOne(starts: plan.colStarts, weights: plan.axisWeights(.cols), length: plan.paddedWidth, scale: 1)
    }

    /// Ramp example of docs/tiling.md: length 56, T = 32, O = 8, M = 2.
    func testRampWithSmallerMargin() throws {
        let plan = try TilePlan.plan(height: 56, width: 56, tile: 32, overlap: 8, margin: 2)
        XCTAssertEqual(plan.ramp, 4)
        XCTAssertEqual(plan.rowStarts, [0, 24])
        let rows = plan.axisWeights(.rows)
        let expectedSecond: [Float] = [0, 0, 0.2, 0.4, 0.6, 0.8, 1, 1]
        let expectedFirst: [Float] = [1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0]
        for k in 0..<8 {
            XCTAssertEqual(rows[1][k], expectedSecond[k], accuracy: 1e-6)
            XCTAssertEqual(rows[0][24 + k], expectedFirst[k], accuracy: 1e-6)
        }
    }

    /// Size-multiple example of docs/tiling.md: T = 64, O = 18, m = 4 on 203 x 157.
    func testSizeMultipleRoundsOverlapAndPads() throws {
        let plan = try TilePlan.plan(height: 203, width: 157, tile: 64, overlap: 18, sizeMultiple: 4)
        XCTAssertEqual(plan.overlap, 20)
        XCTAssertEqual(plan.stride, 44)
        XCTAssertEqual(plan.paddedHeight, 204)
        XCTAssertEqual(plan.paddedWidth, 160)
        XCTAssertEqual(plan.rowStarts, [0, 44, 88, 132, 140])
        XCTAssertTrue((plan.rowStarts + plan.colStarts).allSatisfy { $0 % 4 == 0 })
        XCTAssertEqual(plan.padModes().rows, .reflect)
    }

    func testWeightsSumToOneAtOutputResolution() throws {
        for (height, width, tile, overlap, multiple, scale) in [
            (37, 100, 16, 6, 1, 3), (200, 9, 32, 8, 4, 2), (64, 64, 64, 0, 1, 1), (300, 301, 48, 15, 1, 4),
        ] {
            let plan = try TilePlan.plan(height: height, width: width, tile: tile, overlap: overlap, sizeMultiple: multiple)
            assertSumsToOne(starts: plan.rowStarts, weights: plan.axisWeights(.rows, scale: scale),
                            length: plan.paddedHeight, scale: scale)
            assertSumsToOne(starts: plan.colStarts, weights: plan.axisWeights(.cols, scale: scale),
                            length: plan.paddedWidth, scale: scale)
        }
    }

    private func assertSumsToOne(starts: [Int], weights: [[Float]], length: Int, scale: Int,
                                 file: StaticString = #filePath, line: UInt = #line) {
        var total = [Double](repeating: 0, count: length * scale)
        for (index, start) in starts.enumerated() {
            for (k, weight) in weights[index].enumerated() {
                total[start * scale + k] += Double(weight)
            }
        }
        let worst = total.map { abs($0 - 1) }.max() ?? 0
        XCTAssertLessThan(worst, 1e-6, "weights do not sum to 1 (worst \(worst))", file: file, line: line)
    }

    /// Tiny images: the pad is not shorter than the axis, so reflect falls back to replicate.
    func testPadModeFallsBackToReplicateForTinyImages() throws {
        let plan = try TilePlan.plan(height: 3, width: 40, tile: 32, overlap: 4)
        XCTAssertEqual(plan.paddedHeight, 32)
        XCTAssertEqual(plan.padModes().rows, .replicate)
        XCTAssertEqual(plan.padModes().cols, .reflect)
        XCTAssertEqual(sourceIndices(length: 3, paddedLength: 6, mode: .reflect), [0, 1, 2, 2, 2, 2])
        XCTAssertEqual(sourceIndices(length: 5, paddedLength: 8, mode: .reflect), [0, 1, 2, 3, 4, 3, 2, 1])
        XCTAssertEqual(sourceIndices(length: 5, paddedLength: 8, mode: .replicate), [0, 1, 2, 3, 4, 4, 4, 4])
    }

    func testInvalidSettingsNameTheValidValues() {
        XCTAssertThrowsError(try TilePlan.plan(height: 10, width: 10, tile: 30, overlap: 2, sizeMultiple: 16)) { error in
            XCTAssertEqual((error as? ZooError)?.description,
                           "tile 30 is not a multiple of the model's size_multiple 16; use a multiple of 16, e.g. 32")
        }
        XCTAssertThrowsError(try TilePlan.plan(height: 10, width: 10, tile: 64, overlap: 18, sizeMultiple: 16)) { error in
            XCTAssertEqual((error as? ZooError)?.description,
                           "overlap 18 (rounded up to 32, a multiple of 16) is not less than half the tile 64; use overlap 0 .. 16 or a larger tile")
        }
        XCTAssertThrowsError(try TilePlan.plan(height: 10, width: 10, tile: 64, overlap: 8, margin: 5)) { error in
            XCTAssertEqual((error as? ZooError)?.description,
                           "margin 5 is outside 0 .. overlap // 2 = 4; use a margin of 0 .. 4 or leave it at the default")
        }
        XCTAssertThrowsError(try TilePlan.plan(height: 0, width: 10, tile: 64, overlap: 8))
        XCTAssertThrowsError(try TilePlan.plan(height: 10, width: 10, tile: 64, overlap: -1))
    }

    func testTilesAreRowMajorAndInsideThePaddedImage() throws {
        let plan = try TilePlan.plan(height: 100, width: 70, tile: 32, overlap: 8, sizeMultiple: 8)
        let tiles = plan.tiles()
        XCTAssertEqual(tiles.count, plan.numTiles)
        XCTAssertEqual(tiles.first, TilePosition(rowIndex: 0, colIndex: 0, top: 0, left: 0))
        XCTAssertEqual(tiles[1].colIndex, 1)
        for tile in tiles {
            XCTAssertLessThanOrEqual(tile.top + plan.tile, plan.paddedHeight)
            XCTAssertLessThanOrEqual(tile.left + plan.tile, plan.paddedWidth)
            XCTAssertEqual(tile.top % 8, 0)
            XCTAssertEqual(tile.left % 8, 0)
        }
    }
}
