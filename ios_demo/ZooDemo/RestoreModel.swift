import Observation
import Photos
import PhotosUI
import SwiftUI
import ZooCore

/// Longest side the photo is scaled to before restoring (the tiler handles any size, but a
/// 48 MP photo needs about 1.2 GB of float buffers).
enum MaxSide: Int, CaseIterable, Identifiable {
    case side1024 = 1024
    case side2048 = 2048
    case side4096 = 4096
    case full = 0

    var id: Int { rawValue }
    var value: Int? { self == .full ? nil : rawValue }
    var label: String { self == .full ? "Full resolution" : "\(rawValue) px" }
}

struct RestoreOutcome: @unchecked Sendable {
    let input: PlanarImage
    let output: PlanarImage
    let inputPreview: UIImage
    let outputPreview: UIImage
    let tiles: Int
    let seconds: Double
}

@Observable
@MainActor
final class RestoreModel {
    var listing = ArtifactCatalog.Listing()
    var selectedID: URL?
    /// nil: the manifest's compute units (Core ML only).
    var computeUnits: ComputeUnitsOption?
    var maxSide: MaxSide = .side2048
    var photo: UIImage?
    var outcome: RestoreOutcome?
    var progress: Double = 0
    var isRunning = false
    var status = ""
    var errorMessage: String?

    @ObservationIgnored private var task: Task<Void, Never>?
    @ObservationIgnored private var cachedKey: String?
    @ObservationIgnored private var cachedModel: LoadedModel?

    var selected: ArtifactEntry? { listing.entries.first { $0.id == selectedID } }

    func reload() {
        listing = ArtifactCatalog.scan()
        if selected == nil {
            selectedID = listing.entries.first?.id
        }
    }

    func setPhoto(_ image: UIImage) {
        cancel()
        photo = image
        outcome = nil
        progress = 0
        status = ""
        errorMessage = nil
    }

    func loadPicked(_ item: PhotosPickerItem?) async {
        guard let item else { return }
        do {
            guard let data = try await item.loadTransferable(type: Data.self), let image = UIImage(data: data) else {
                throw ZooError("the photo could not be loaded", fix: "pick another photo")
            }
            setPhoto(image)
        } catch {
            errorMessage = error.localizedDescription
        }
    }

    func cancel() {
        task?.cancel()
        task = nil
    }

    func restore() {
        guard let entry = selected, let photo else { return }
        cancel()
        isRunning = true
        errorMessage = nil
        progress = 0
        outcome = nil
        status = "Loading \(entry.manifest.model.name)..."
        let units = computeUnits
        let maxSide = maxSide.value
        task = Task {
            defer { isRunning = false }
            do {
                let loaded = try await model(for: entry, units: units)
                status = "Restoring with \(loaded.summary)..."
                let tiler = try Tiler(manifest: entry.manifest)
                let result = try await Self.run(photo: photo, maxSide: maxSide, tiler: tiler, model: loaded.model) { fraction in
                    Task { @MainActor [weak self] in self?.progress = fraction }
                }
                outcome = result
                progress = 1
                let seconds = String(format: "%.2f", result.seconds)
                status = "\(result.output.width) x \(result.output.height), \(result.tiles) tiles, \(seconds) s (\(loaded.summary))"
            } catch is CancellationError {
                status = "Cancelled"
            } catch {
                errorMessage = error.localizedDescription
                status = ""
            }
        }
    }

    /// The tiled restoration, off the main actor (a nonisolated async function runs on the
    /// global executor; cancellation of the calling task reaches the tiler between tiles).
    nonisolated static func run(
        photo: UIImage, maxSide: Int?, tiler: Tiler, model: TileModel,
        progress: @escaping @Sendable (Double) -> Void
    ) async throws -> RestoreOutcome {
        let input = try ImageConversion.planarImage(from: photo, maxSide: maxSide)
        let plan = try tiler.plan(height: input.height, width: input.width)
        let clock = ContinuousClock()
        var output: PlanarImage?
        let elapsed = try clock.measure {
            output = try tiler.restore(input, with: model) { done, total in
                progress(Double(done) / Double(total))
            }
        }
        let restored = output!.clamped()
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return RestoreOutcome(
            input: input, output: restored,
            inputPreview: try ImageConversion.uiImage(from: input),
            outputPreview: try ImageConversion.uiImage(from: restored),
            tiles: plan.numTiles, seconds: seconds)
    }

    private func model(for entry: ArtifactEntry, units: ComputeUnitsOption?) async throws -> LoadedModel {
        let key = "\(entry.folder.path)|\(units?.rawValue ?? "manifest")"
        if key == cachedKey, let cachedModel {
            return cachedModel
        }
        cachedKey = nil
        cachedModel = nil
        let loaded = try await TileModelLoader.load(folder: entry.folder, manifest: entry.manifest, source: entry.source,
                                                    computeUnits: units)
        cachedKey = key
        cachedModel = loaded
        return loaded
    }

    func saveToPhotos() async {
        guard let outcome else { return }
        do {
            let access = await PHPhotoLibrary.requestAuthorization(for: .addOnly)
            guard access == .authorized || access == .limited else {
                throw ZooError("the app may not add photos", fix: "allow it in Settings > Privacy & Security > Photos")
            }
            let data = try ImageConversion.pngData(from: outcome.output)
            try await PHPhotoLibrary.shared().performChanges {
                let request = PHAssetCreationRequest.forAsset()
                request.addResource(with: .photo, data: data, options: nil)
            }
            status = "Saved to Photos (lossless PNG)"
        } catch {
            errorMessage = error.localizedDescription
        }
    }
}
