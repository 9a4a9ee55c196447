import CoreML
import Foundation
import UIKit
import ZooCore

/// A model ready to run, with what the results file says about its runtime.
struct LoadedModel: @unchecked Sendable {
    let model: TileModel
    let runtime: ResultRuntime
    /// Placement and other facts worth keeping in the record's notes.
    let notes: [String]
    /// One line for the UI, e.g. "Core ML, CPU and Neural Engine".
    let summary: String
}

/// Where an artifact comes from: built into the app (Core ML already compiled by the build,
/// sha256 checked by the build script) or a folder the user copied into Documents.
enum ArtifactSource: String, Sendable {
    case bundle
    case documents
}

enum TileModelLoader {
    /// Verifies (Documents: always; bundle: .pte files) and loads the artifact described by
    /// `manifest` in `folder`. `computeUnits` overrides the manifest's Core ML compute units.
    static func load(folder: URL, manifest: Manifest, source: ArtifactSource,
                     computeUnits override: ComputeUnitsOption? = nil) async throws -> LoadedModel {
        let runtime = try manifest.appRuntime()
        let precision = manifest.precision.rawValue
        switch runtime {
        case .coreml:
            let units = override ?? manifest.computeUnits ?? .all
            let compiled: URL
            switch source {
            case .bundle:
                // scripts/bundle_models.sh checked the package's sha256 and compiled it.
                let name = (manifest.artifact.file as NSString).deletingPathExtension + ".mlmodelc"
                compiled = folder.appendingPathComponent(name, isDirectory: true)
                guard FileManager.default.fileExists(atPath: compiled.path) else {
                    throw ZooError("the app bundle has no \(name) for \(manifest.artifact.file)",
                                   fix: "rebuild the app (the build compiles the .mlpackage files of ios_demo/Models)")
                }
            case .documents:
                try manifest.verifyArtifact(in: folder)
                compiled = try await CoreMLCompiler.compiledModel(
                    for: manifest.artifactURL(in: folder), sha256: manifest.artifact.sha256)
            }
            let model = try CoreMLTileModel(compiledModelURL: compiled, manifest: manifest, computeUnits: units)
            let placement = await CoreMLCompiler.deviceSummary(compiledModel: compiled, configuration: model.configuration)
            let systemVersion = await MainActor.run { UIDevice.current.systemVersion }
            let info = ResultRuntime(
                name: AppRuntime.coreml.rawValue, version: "iOS \(systemVersion) Core ML", delegate: nil,
                device: placement.device, precision: precision, threads: nil,
                options: ["compute_units": .string(units.rawValue)])
            return LoadedModel(model: model, runtime: info, notes: placement.note.map { [$0] } ?? [],
                               summary: "Core ML, \(units.label)")
        case .executorch:
            try manifest.verifyArtifact(in: folder)
            #if canImport(ExecuTorch)
            let program = manifest.artifactURL(in: folder)
            let model = try ExecuTorchTileModel(programURL: program, manifest: manifest)
            let delegate = manifest.backend.delegate
            let device: String? = delegate == "XnnpackBackend" ? "cpu" : nil
            var notes: [String] = []
            if delegate == "CoreMLBackend" {
                notes.append("ExecuTorch Core ML delegate: Core ML chooses ANE/GPU/CPU (compute units as exported)")
            }
            let info = ResultRuntime(
                name: AppRuntime.executorch.rawValue, version: ExecuTorchRuntimeInfo.version, delegate: delegate,
                device: device, precision: precision, threads: nil, options: [:])
            return LoadedModel(model: model, runtime: info, notes: notes,
                               summary: "ExecuTorch \(ExecuTorchRuntimeInfo.version), \(delegate ?? "portable kernels")")
            #else
            throw ZooError("this build of the app has no ExecuTorch runtime",
                           fix: "add the executorch Swift package (see docs/ios.md) or export for Core ML")
            #endif
        }
    }
}
