import CoreGraphics
import Foundation
import ImageIO
import UIKit
import UniformTypeIdentifiers
import ZooCore

/// Between images (files, photos, UIImage) and ZooCore's float planar RGB.
///
/// 8-bit RGB(A) images are read byte for byte (value / 255, like the zoo's Python reader), so
/// the benchmark's output hashes can be compared with `zoo run` on the same PNGs. Other images
/// (16-bit, greyscale, premultiplied alpha, HEIC photos in Display P3) are drawn into an 8-bit
/// sRGB context first: fine for the demo, not bit-exact with Python.
enum ImageConversion {
    // MARK: Reading

    static func loadImage(at url: URL) throws -> PlanarImage {
        guard let source = CGImageSourceCreateWithURL(url as CFURL, nil),
              let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else {
            throw ZooError("\(url.lastPathComponent) is not an image the app can read", fix: "use 8-bit RGB PNGs")
        }
        return try planarImage(from: image)
    }

    static func planarImage(from image: CGImage) throws -> PlanarImage {
        if let exact = try exactRGB8(image) {
            return exact
        }
        return try drawnRGB8(image)
    }

    /// A photo from the camera or the library: upright (EXIF orientation applied), at most
    /// `maxSide` pixels on its longer side (nil: full resolution).
    static func planarImage(from photo: UIImage, maxSide: Int?) throws -> PlanarImage {
        let pixelWidth = photo.size.width * photo.scale
        let pixelHeight = photo.size.height * photo.scale
        var factor: CGFloat = 1
        if let maxSide, max(pixelWidth, pixelHeight) > CGFloat(maxSide) {
            factor = CGFloat(maxSide) / max(pixelWidth, pixelHeight)
        }
        let size = CGSize(width: (pixelWidth * factor).rounded(), height: (pixelHeight * factor).rounded())
        let format = UIGraphicsImageRendererFormat()
        format.scale = 1
        format.opaque = true
        format.preferredRange = .standard  // 8-bit sRGB
        let upright = UIGraphicsImageRenderer(size: size, format: format).image { _ in
            photo.draw(in: CGRect(origin: .zero, size: size))
        }
        guard let cgImage = upright.cgImage else {
            throw ZooError("the photo could not be converted", fix: "pick another photo")
        }
        return try planarImage(from: cgImage)
    }

    /// Byte-exact read of 8-bit RGB / RGBA / ARGB images with straight (not premultiplied)
    /// or no alpha in an RGB colour space; nil for anything else.
    private static func exactRGB8(_ image: CGImage) throws -> PlanarImage? {
        guard image.bitsPerComponent == 8,
              image.colorSpace?.model == .rgb,
              let data = image.dataProvider?.data,
              let bytes = CFDataGetBytePtr(data) else { return nil }
        let width = image.width
        let height = image.height
        let rowBytes = image.bytesPerRow
        let order = image.bitmapInfo.intersection(.byteOrderMask)
        let littleEndian = order == .byteOrder32Little
        let offsets: (r: Int, g: Int, b: Int)
        let pixelBytes: Int
        switch (image.bitsPerPixel, image.alphaInfo) {
        case (24, CGImageAlphaInfo.none):
            guard order == .byteOrderDefault || order == .byteOrder32Big else { return nil }
            offsets = (0, 1, 2)
            pixelBytes = 3
        case (32, CGImageAlphaInfo.last), (32, CGImageAlphaInfo.noneSkipLast):
            offsets = littleEndian ? (3, 2, 1) : (0, 1, 2)  // RGBA, or ABGR in memory
            pixelBytes = 4
        case (32, CGImageAlphaInfo.first), (32, CGImageAlphaInfo.noneSkipFirst):
            offsets = littleEndian ? (2, 1, 0) : (1, 2, 3)  // ARGB, or BGRA in memory
            pixelBytes = 4
        default:
            return nil
        }
        guard CFDataGetLength(data) >= rowBytes * (height - 1) + width * pixelBytes else { return nil }
        let plane = width * height
        var pixels = [Float](repeating: 0, count: plane * 3)
        for y in 0..<height {
            let row = bytes + y * rowBytes
            for x in 0..<width {
                let pixel = row + x * pixelBytes
                let index = y * width + x
                pixels[index] = Float(pixel[offsets.r]) / 255
                pixels[plane + index] = Float(pixel[offsets.g]) / 255
                pixels[2 * plane + index] = Float(pixel[offsets.b]) / 255
            }
        }
        return try PlanarImage(height: height, width: width, pixels: pixels)
    }

    /// Anything else: drawn into an 8-bit sRGB RGBX context.
    private static func drawnRGB8(_ image: CGImage) throws -> PlanarImage {
        let width = image.width
        let height = image.height
        var buffer = [UInt8](repeating: 0, count: width * height * 4)
        let drawn: Bool = buffer.withUnsafeMutableBytes { raw in
            guard let context = CGContext(
                data: raw.baseAddress, width: width, height: height, bitsPerComponent: 8, bytesPerRow: width * 4,
                space: CGColorSpace(name: CGColorSpace.sRGB)!,
                bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue | CGBitmapInfo.byteOrder32Big.rawValue
            ) else { return false }
            context.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        guard drawn else {
            throw ZooError("the image (\(width)x\(height)) could not be converted to RGB", fix: "use an 8-bit RGB PNG or JPEG")
        }
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for index in 0..<(width * height) {
            rgb[index * 3] = buffer[index * 4]
            rgb[index * 3 + 1] = buffer[index * 4 + 1]
            rgb[index * 3 + 2] = buffer[index * 4 + 2]
        }
        return try PlanarImage(rgb8: rgb, height: height, width: width)
    }

    // MARK: Writing

    /// The image as an 8-bit sRGB CGImage (values clamped and rounded as a saved PNG).
    static func cgImage(from image: PlanarImage) throws -> CGImage {
        let bytes = image.rgb8Bytes()
        guard let provider = CGDataProvider(data: Data(bytes) as CFData),
              let cgImage = CGImage(
                width: image.width, height: image.height, bitsPerComponent: 8, bitsPerPixel: 24,
                bytesPerRow: image.width * 3, space: CGColorSpace(name: CGColorSpace.sRGB)!,
                bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.none.rawValue),
                provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent) else {
            throw ZooError("the restored image (\(image.width)x\(image.height)) could not be converted for display")
        }
        return cgImage
    }

    static func uiImage(from image: PlanarImage) throws -> UIImage {
        UIImage(cgImage: try cgImage(from: image))
    }

    /// Lossless PNG bytes (for saving to Photos).
    static func pngData(from image: PlanarImage) throws -> Data {
        let cgImage = try cgImage(from: image)
        let data = NSMutableData()
        guard let destination = CGImageDestinationCreateWithData(data as CFMutableData, UTType.png.identifier as CFString, 1, nil) else {
            throw ZooError("PNG encoding is not available")
        }
        CGImageDestinationAddImage(destination, cgImage, nil)
        guard CGImageDestinationFinalize(destination) else {
            throw ZooError("the restored image could not be encoded as PNG")
        }
        return data as Data
    }
}
