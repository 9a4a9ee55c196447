import Foundation
import XCTest

/// Files of the zoo repository that the tests read (golden manifests, tile plans, results),
/// found relative to this source file: ios_demo/ZooCore/Tests/ZooCoreTests/RepoFiles.swift.
enum RepoFiles {
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // ZooCoreTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // ZooCore
        .deletingLastPathComponent()  // ios_demo
        .deletingLastPathComponent()  // the repository

    static func url(_ relative: String) -> URL {
        root.appendingPathComponent(relative)
    }

    static func data(_ relative: String) throws -> Data {
        let file = url(relative)
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw XCTSkip("\(relative) is not in this checkout (\(file.path))")
        }
        return try Data(contentsOf: file)
    }

    /// The JSON files of a repository folder, sorted by name.
    static func jsonFiles(in relative: String) throws -> [URL] {
        let folder = url(relative)
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasSuffix(".json") }
            .sorted()
        return names.map { folder.appendingPathComponent($0) }
    }

    /// A fresh temporary folder, removed at the end of the test.
    static func temporaryFolder(_ test: XCTestCase) throws -> URL {
        let folder = FileManager.default.temporaryDirectory
            .appendingPathComponent("ZooCoreTests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        return folder
    }
}

/// A JSON value without its null members (the app leaves unknown fields out instead of
/// writing null), for comparing a round trip with a golden file.
func withoutNulls(_ value: Any) -> Any {
    if let object = value as? [String: Any] {
        var result: [String: Any] = [:]
        for (key, member) in object where !(member is NSNull) {
            result[key] = withoutNulls(member)
        }
        return result
    }
    if let array = value as? [Any] {
        return array.map(withoutNulls)
    }
    return value
}
