#!/bin/sh
# Build phase of ZooDemo (project.yml, postCompileScripts): copies every export folder of
# ios_demo/Models/<name>/ (written by `zoo export ... -o ios_demo/Models/<name>`) into the app
# bundle as Models/<name>/:
#   manifest.json        copied;
#   <artifact>.pte       sha256 checked against the manifest, copied;
#   <artifact>.mlpackage sha256 checked (the manifest's "tree" method, as
#                        export_mobile/manifest.py sha256_of computes it), then compiled to
#                        <artifact>.mlmodelc with `xcrun coremlcompiler compile`.
# A checksum mismatch fails the build. Folders without manifest.json are skipped.
set -eu

SRC="${SRCROOT}/Models"
DEST="${TARGET_BUILD_DIR}/${UNLOCALIZED_RESOURCES_FOLDER_PATH}/Models"

rm -rf "$DEST"
[ -d "$SRC" ] || exit 0

file_sha256() {
  shasum -a 256 < "$1" | cut -d' ' -f1
}

# One line "relative/path<TAB>sha256\n" per regular file (symbolic links to files count, as
# Python's is_file()), sorted by path in byte order (= Python's code point order), hashed.
tree_sha256() {
  (
    cd "$1"
    find . \( -type f -o -type l \) -print | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r path; do
      [ -f "$path" ] || continue
      printf '%s\t%s\n' "$path" "$(file_sha256 "$path")"
    done
  ) | shasum -a 256 | cut -d' ' -f1
}

manifest_field() {
  plutil -extract "$2" raw -o - "$1"
}

count=0
for folder in "$SRC"/*/; do
  [ -f "${folder}manifest.json" ] || continue
  name=$(basename "$folder")
  manifest="${folder}manifest.json"
  artifact=$(manifest_field "$manifest" artifact.file)
  expected=$(manifest_field "$manifest" artifact.sha256)
  method=$(manifest_field "$manifest" artifact.sha256_method)
  source="${folder}${artifact}"
  out="${DEST}/${name}"
  mkdir -p "$out"
  cp "$manifest" "$out/manifest.json"

  if [ ! -e "$source" ]; then
    echo "error: ios_demo/Models/${name}: ${artifact} is missing beside manifest.json (copy the whole export folder)"
    exit 1
  fi
  if [ "$method" = "tree" ]; then
    actual=$(tree_sha256 "$source")
  else
    actual=$(file_sha256 "$source")
  fi
  if [ "$actual" != "$expected" ]; then
    echo "error: ios_demo/Models/${name}/${artifact}: sha256 ${actual} does not match the manifest's ${expected}; the file is corrupted or was replaced (export it again)"
    exit 1
  fi

  case "$artifact" in
    *.mlpackage)
      xcrun coremlcompiler compile "$source" "$out" >/dev/null
      stem="${artifact%.mlpackage}"
      if [ ! -d "$out/${stem}.mlmodelc" ]; then
        echo "error: coremlcompiler did not produce ${stem}.mlmodelc for ios_demo/Models/${name}"
        exit 1
      fi
      ;;
    *)
      cp "$source" "$out/"
      ;;
  esac
  count=$((count + 1))
  echo "bundled ios_demo/Models/${name} (${artifact}, sha256 ${actual})"
done
echo "bundle_models.sh: ${count} model(s) in Models/"
