import Foundation

/// The app's launch arguments: `-benchmark <folder in Documents> [-runs N] [-warmup W]`
/// (Xcode: Scheme > Run > Arguments; device: `xcrun devicectl device process launch ...`).
/// Arguments the app does not know (Xcode adds some, e.g. `-NSDocumentRevisionsDebugMode YES`)
/// are ignored.
public struct LaunchOptions: Equatable, Sendable {
    public var benchmarkFolder: String?
    public var runs: Int?
    public var warmup: Int?

    public init(benchmarkFolder: String? = nil, runs: Int? = nil, warmup: Int? = nil) {
        self.benchmarkFolder = benchmarkFolder
        self.runs = runs
        self.warmup = warmup
    }

    /// Parses `arguments` (ProcessInfo.processInfo.arguments: the executable first).
    public static func parse(_ arguments: [String]) throws -> LaunchOptions {
        var options = LaunchOptions()
        var index = arguments.startIndex
        func value(after flag: String) throws -> String {
            let next = index + 1
            guard next < arguments.endIndex, !arguments[next].hasPrefix("-") || Int(arguments[next]) != nil else {
                throw ZooError("launch argument \(flag) needs a value", fix: "e.g. -benchmark bench -runs 20 -warmup 3")
            }
            index = next
            return arguments[next]
        }
        while index < arguments.endIndex {
            let argument = arguments[index]
            switch argument {
            case "-benchmark":
                let folder = try value(after: argument)
                options.benchmarkFolder = try checkedFolderName(folder)
            case "-runs":
                let text = try value(after: argument)
                guard let runs = Int(text), runs >= 1 else {
                    throw ZooError("-runs \(text) is not an integer >= 1", fix: "e.g. -runs 20")
                }
                options.runs = runs
            case "-warmup":
                let text = try value(after: argument)
                guard let warmup = Int(text), warmup >= 0 else {
                    throw ZooError("-warmup \(text) is not an integer >= 0", fix: "e.g. -warmup 3")
                }
                options.warmup = warmup
            default:
                break
            }
            index += 1
        }
        return options
    }

    /// A folder inside Documents: a relative path without `..` components.
    public static func checkedFolderName(_ folder: String) throws -> String {
        let trimmed = folder.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        let parts = trimmed.split(separator: "/")
        guard !trimmed.isEmpty, !folder.hasPrefix("/"), !parts.contains(where: { $0 == ".." || $0 == "." }) else {
            throw ZooError("benchmark folder '\(folder)' is not a folder inside Documents",
                           fix: "pass the folder's name as the Files app shows it, e.g. -benchmark bench")
        }
        return trimmed
    }

    /// The benchmark configuration with these options over the defaults.
    public var configuration: BenchmarkConfiguration {
        BenchmarkConfiguration(runs: runs ?? BenchmarkConfiguration.defaultRuns,
                               warmup: warmup ?? BenchmarkConfiguration.defaultWarmup)
    }
}

/// What a benchmark folder holds: manifest.json, the artifact it names, images/*.png.
public struct BenchmarkFolder: Sendable {
    public let url: URL
    public let manifest: Manifest
    /// The PNGs of images/, sorted by name (code point order, as Python's sorted()).
    public let imageURLs: [URL]

    /// Reads the manifest and lists the images; the artifact's sha256 is checked separately
    /// (`manifest.verifyArtifact(in:)`), as loading it can take a while.
    public init(url: URL) throws {
        self.url = url
        self.manifest = try Manifest.load(from: url.appendingPathComponent("manifest.json"))
        let imagesFolder = url.appendingPathComponent("images", isDirectory: true)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: imagesFolder.path, isDirectory: &isDirectory), isDirectory.boolValue {
            let names = try FileManager.default.contentsOfDirectory(atPath: imagesFolder.path)
                .filter { $0.lowercased().hasSuffix(".png") && !$0.hasPrefix(".") }
                .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            self.imageURLs = names.map { imagesFolder.appendingPathComponent($0) }
        } else {
            self.imageURLs = []
        }
    }

    /// Image name as written to the results file: the file name without extension.
    public static func imageName(_ url: URL) -> String {
        url.deletingPathExtension().lastPathComponent
    }
}
