import PhotosUI
import SwiftUI
import ZooCore

/// Pick or take a photo, pick an exported model, restore it tile by tile, compare, save.
struct RestoreView: View {
    @State private var model = RestoreModel()
    @State private var pickerItem: PhotosPickerItem?
    @State private var showCamera = false

    var body: some View {
        NavigationStack {
            Form {
                Section("Model") {
                    if model.listing.entries.isEmpty {
                        Text("No exported models found. Put export folders (artifact + manifest.json) in ios_demo/Models before building, or copy them into the app's Documents with the Files app.")
                            .font(.callout)
                            .foregroundStyle(.secondary)
                    } else {
                        Picker("Artifact", selection: $model.selectedID) {
                            ForEach(model.listing.entries) { entry in
                                Text(entry.title).tag(Optional(entry.id))
                            }
                        }
                        .pickerStyle(.navigationLink)
                        if let entry = model.selected {
                            ModelSummary(entry: entry)
                            if entry.manifest.backend.runtime == .coreml {
                                Picker("Compute units", selection: $model.computeUnits) {
                                    Text("As exported (\(entry.manifest.computeUnits?.label ?? "All"))").tag(ComputeUnitsOption?.none)
                                    ForEach(ComputeUnitsOption.allCases, id: \.self) { units in
                                        Text(units.label).tag(Optional(units))
                                    }
                                }
                            }
                        }
                    }
                    ForEach(model.listing.problems, id: \.self) { problem in
                        Label(problem, systemImage: "exclamationmark.triangle")
                            .font(.footnote)
                            .foregroundStyle(.orange)
                    }
                }

                Section("Photo") {
                    HStack {
                        PhotosPicker(selection: $pickerItem, matching: .images) {
                            Label("Library", systemImage: "photo.on.rectangle")
                        }
                        Spacer()
                        Button {
                            showCamera = true
                        } label: {
                            Label("Camera", systemImage: "camera")
                        }
                        .disabled(!CameraPicker.isAvailable)
                    }
                    .buttonStyle(.borderless)
                    Picker("Restore at", selection: $model.maxSide) {
                        ForEach(MaxSide.allCases) { side in
                            Text(side.label).tag(side)
                        }
                    }
                }

                Section {
                    if model.isRunning {
                        ProgressView(value: model.progress) {
                            Text(model.status)
                        }
                        Button("Cancel", role: .cancel) { model.cancel() }
                    } else {
                        Button {
                            model.restore()
                        } label: {
                            Label("Restore", systemImage: "wand.and.stars")
                        }
                        .disabled(model.selected == nil || model.photo == nil)
                        if !model.status.isEmpty {
                            Text(model.status).font(.footnote).foregroundStyle(.secondary)
                        }
                    }
                    if let message = model.errorMessage {
                        Text(message).font(.footnote).foregroundStyle(.red)
                    }
                }

                if let outcome = model.outcome {
                    Section("Before / after (drag)") {
                        CompareView(before: outcome.inputPreview, after: outcome.outputPreview)
                            .frame(minHeight: 320)
                        Button {
                            Task { await model.saveToPhotos() }
                        } label: {
                            Label("Save to Photos", systemImage: "square.and.arrow.down")
                        }
                    }
                } else if let photo = model.photo {
                    Section("Photo") {
                        Image(uiImage: photo)
                            .resizable()
                            .scaledToFit()
                            .frame(maxHeight: 320)
                    }
                }
            }
            .navigationTitle("Restore")
            .toolbar {
                Button {
                    model.reload()
                } label: {
                    Image(systemName: "arrow.clockwise")
                }
                .accessibilityLabel("Rescan models")
            }
            .onAppear { model.reload() }
            .onChange(of: pickerItem) { _, item in
                Task { await model.loadPicked(item) }
            }
            .fullScreenCover(isPresented: $showCamera) {
                CameraPicker { image in model.setPhoto(image) }
                    .ignoresSafeArea()
            }
        }
    }
}

private struct ModelSummary: View {
    let entry: ArtifactEntry

    private var details: String {
        let manifest = entry.manifest
        var runtime = manifest.backend.runtime.rawValue
        if let delegate = manifest.backend.delegate {
            runtime += " / " + delegate
        }
        let place = entry.source == .bundle ? "in the app" : "Documents"
        return "\(runtime), tile \(manifest.tileSide), overlap \(manifest.tiling.overlap), scale \(manifest.tiling.scale) · \(place)"
    }

    var body: some View {
        VStack(alignment: .leading, spacing: 4) {
            Text(entry.manifest.model.summary)
                .font(.footnote)
                .lineLimit(3)
            Text(details)
                .font(.caption)
                .foregroundStyle(.secondary)
            if let warning = entry.warning {
                Text(warning).font(.caption).foregroundStyle(.orange)
            }
        }
    }
}

/// The restored image with the original revealed left of a draggable divider.
struct CompareView: View {
    let before: UIImage
    let after: UIImage
    @State private var split: CGFloat = 0.5

    var body: some View {
        GeometryReader { geometry in
            let width = geometry.size.width
            ZStack(alignment: .leading) {
                Image(uiImage: after)
                    .resizable()
                    .scaledToFit()
                    .frame(width: width, height: geometry.size.height)
                Image(uiImage: before)
                    .resizable()
                    .scaledToFit()
                    .frame(width: width, height: geometry.size.height)
                    .mask(alignment: .leading) {
                        Rectangle().frame(width: max(0, width * split))
                    }
                Rectangle()
                    .fill(.white)
                    .frame(width: 2)
                    .offset(x: width * split - 1)
                    .shadow(radius: 2)
            }
            .contentShape(Rectangle())
            .gesture(DragGesture(minimumDistance: 0).onChanged { value in
                split = min(max(value.location.x / max(width, 1), 0), 1)
            })
            .overlay(alignment: .top) {
                HStack {
                    Text("before").padding(4).background(.thinMaterial, in: Capsule())
                    Spacer()
                    Text("after").padding(4).background(.thinMaterial, in: Capsule())
                }
                .font(.caption)
                .padding(6)
            }
        }
    }
}
