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

func libjpegDecode([]byte, int) (decoded, error) { return decoded{}, errNotRaw }

func libjpegEncode(image.Image, int) ([]byte, bool, error) { return nil, false, nil }
