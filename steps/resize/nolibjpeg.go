//go:build !libjpeg

package resize

import (
	"errors"
	"image"
)

// haveLibjpeg says that JPEGs go through libjpeg(-turbo); this build uses
// image/jpeg and jpegenc (see the package documentation).
const haveLibjpeg = false

var errNotRaw = errors.New("built without libjpeg")

func libjpegDecode([]byte, int) (image.Image, image.YCbCrSubsampleRatio, error) {
	return nil, 0, errNotRaw
}

func libjpegEncode(image.Image, int) ([]byte, bool, error) { return nil, false, nil }
