package org.restorationzoo.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.ColorSpace
import android.graphics.ImageDecoder
import android.net.Uri
import android.os.Build
import java.io.File
import java.io.IOException
import kotlin.math.max
import kotlin.math.sqrt
import org.restorationzoo.core.PlanarImage

/** Bitmap <-> PlanarImage (float RGB planes, level / 255 as zoo.data.io reads 8-bit files). */
object Images {
    /** Decode a benchmark PNG as is (no scaling, no premultiplied alpha); alpha is dropped. */
    fun decodePng(file: File): PlanarImage {
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inPremultiplied = false
            inScaled = false
        }
        val bitmap = BitmapFactory.decodeFile(file.absolutePath, options)
            ?: throw IOException("cannot decode ${file.name}: not a PNG Android can read")
        try {
            return fromBitmap(bitmap)
        } finally {
            bitmap.recycle()
        }
    }

    /**
     * Decode a photo (gallery or camera) in sRGB, scaled down to at most [maxPixels] pixels;
     * on Android 9+ ImageDecoder also applies the EXIF orientation.
     */
    fun decodeUri(resolver: ContentResolver, uri: Uri, maxPixels: Long): Bitmap {
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
            val source = ImageDecoder.createSource(resolver, uri)
            return ImageDecoder.decodeBitmap(source) { decoder, info, _ ->
                decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE
                decoder.setTargetColorSpace(ColorSpace.get(ColorSpace.Named.SRGB))
                val pixels = info.size.width.toLong() * info.size.height
                if (pixels > maxPixels) {
                    val factor = sqrt(maxPixels.toDouble() / pixels)
                    decoder.setTargetSize(max(1, (info.size.width * factor).toInt()), max(1, (info.size.height * factor).toInt()))
                }
            }
        }
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, bounds) }
        var sample = 1
        while (bounds.outWidth.toLong() * bounds.outHeight / (sample.toLong() * sample) > maxPixels) sample *= 2
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inSampleSize = sample
        }
        return resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw IOException("cannot decode $uri: not an image Android can read")
    }

    fun fromBitmap(bitmap: Bitmap): PlanarImage {
        val pixels = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(pixels, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        return PlanarImage.fromArgb(pixels, bitmap.width, bitmap.height)
    }

    fun toBitmap(image: PlanarImage): Bitmap =
        Bitmap.createBitmap(image.toArgb(), image.width, image.height, Bitmap.Config.ARGB_8888)
}
