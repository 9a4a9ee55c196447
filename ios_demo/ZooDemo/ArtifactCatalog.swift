import Foundation
import ZooCore

/// One exported model the app can run: a folder with manifest.json and its artifact.
struct ArtifactEntry: Identifiable, Hashable, @unchecked Sendable {
    let folder: URL
    let manifest: Manifest
    let source: ArtifactSource

    var id: URL { folder }

    var title: String {
        "\(manifest.model.name) · \(manifest.target) · \(manifest.precision.rawValue) · \(manifest.tileSide)px"
    }

    var warning: String? {
        if manifest.model.weights.source == .untrained {
            return "Untrained (random) weights: a pipeline check, not a restoration model."
        }
        return nil
    }

    static func == (lhs: ArtifactEntry, rhs: ArtifactEntry) -> Bool { lhs.folder == rhs.folder }
    func hash(into hasher: inout Hasher) { hasher.combine(folder) }
}

/// Finds the exported models: built into the app (ios_demo/Models/<name>/, copied and compiled by
/// scripts/bundle_models.sh into Models/ of the bundle) and folders copied into Documents.
enum ArtifactCatalog {
    struct Listing {
        var entries: [ArtifactEntry] = []
        /// One line per folder that has a manifest.json the app cannot use, with the reason.
        var problems: [String] = []
    }

    static func scan() -> Listing {
        var listing = Listing()
        if let models = Bundle.main.resourceURL?.appendingPathComponent("Models", isDirectory: true) {
            scan(models, source: .bundle, into: &listing)
        }
        scan(DeviceInfo.documents, source: .documents, into: &listing)
        return listing
    }

    /// Folders of Documents that hold a manifest.json (candidates for the benchmark).
    static func documentFolders() -> [String] {
        let root = DeviceInfo.documents
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.filter { name in
            FileManager.default.fileExists(atPath: root.appendingPathComponent(name).appendingPathComponent("manifest.json").path)
        }.sorted()
    }

    private static func scan(_ root: URL, source: ArtifactSource, into listing: inout Listing) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root.path) else { return }
        for name in names.sorted() where !name.hasPrefix(".") {
            let folder = root.appendingPathComponent(name, isDirectory: true)
            let manifestURL = folder.appendingPathComponent("manifest.json")
            guard FileManager.default.fileExists(atPath: manifestURL.path) else { continue }
            do {
                let manifest = try Manifest.load(from: manifestURL)
                _ = try manifest.appRuntime()
                listing.entries.append(ArtifactEntry(folder: folder, manifest: manifest, source: source))
            } catch {
                listing.problems.append("\(name): \(error.localizedDescription)")
            }
        }
    }
}
