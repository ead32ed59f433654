//go:build amd64 && !purego

#include "textflag.h"

// Constants of idctK: K(i) is the i-th row of 8 int32.
#define K(i) ·idctK+(32*(i))(SB)

// a, b = a+b, a-b (t is clobbered).
#define BFLY(a, b, t) \
	VPADDD b, a, t \
	VPSUBD b, a, b \
	VMOVDQU t, a

// a, b = dctBox(a, b, kcos, ksin) with k = K(i), K(i+1) = ksin-kcos and
// K(i+2) = kcos+ksin (t0-t2 are clobbered).
#define BOX(a, b, i, t0, t1, t2) \
	VPADDD b, a, t0 \
	VPMULLD K(i), t0, t0 \
	VPMULLD K(i+1), b, t1 \
	VPMULLD K(i+2), a, t2 \
	VPADDD t1, t0, a \
	VPSUBD t2, t0, b

// Transposes the 8x8 int32 matrix whose rows are i0-i7 into t0-t7
// (i0-i7 are clobbered).
#define TRANSPOSE(i0, i1, i2, i3, i4, i5, i6, i7, t0, t1, t2, t3, t4, t5, t6, t7) \
	VPUNPCKLDQ i1, i0, t0 \
	VPUNPCKHDQ i1, i0, t1 \
	VPUNPCKLDQ i3, i2, t2 \
	VPUNPCKHDQ i3, i2, t3 \
	VPUNPCKLDQ i5, i4, t4 \
	VPUNPCKHDQ i5, i4, t5 \
	VPUNPCKLDQ i7, i6, t6 \
	VPUNPCKHDQ i7, i6, t7 \
	VPUNPCKLQDQ t2, t0, i0 \
	VPUNPCKHQDQ t2, t0, i1 \
	VPUNPCKLQDQ t3, t1, i2 \
	VPUNPCKHQDQ t3, t1, i3 \
	VPUNPCKLQDQ t6, t4, i4 \
	VPUNPCKHQDQ t6, t4, i5 \
	VPUNPCKLQDQ t7, t5, i6 \
	VPUNPCKHQDQ t7, t5, i7 \
	VPERM2I128 $0x20, i4, i0, t0 \
	VPERM2I128 $0x31, i4, i0, t4 \
	VPERM2I128 $0x20, i5, i1, t1 \
	VPERM2I128 $0x31, i5, i1, t5 \
	VPERM2I128 $0x20, i6, i2, t2 \
	VPERM2I128 $0x31, i6, i2, t6 \
	VPERM2I128 $0x20, i7, i3, t3 \
	VPERM2I128 $0x31, i7, i3, t7

// func idctAVX2(b, q *block, dst *byte, stride int)
TEXT ·idctAVX2(SB), NOSPLIT, $0-32
	MOVQ b+0(FP), AX
	MOVQ q+8(FP), BX
	MOVQ dst+16(FP), DI
	MOVQ stride+24(FP), DX

	// Load and dequantize the rows.
	VMOVDQU 0(AX), Y0
	VMOVDQU 32(AX), Y1
	VMOVDQU 64(AX), Y2
	VMOVDQU 96(AX), Y3
	VMOVDQU 128(AX), Y4
	VMOVDQU 160(AX), Y5
	VMOVDQU 192(AX), Y6
	VMOVDQU 224(AX), Y7
	VPMULLD 0(BX), Y0, Y0
	VPMULLD 32(BX), Y1, Y1
	VPMULLD 64(BX), Y2, Y2
	VPMULLD 96(BX), Y3, Y3
	VPMULLD 128(BX), Y4, Y4
	VPMULLD 160(BX), Y5, Y5
	VPMULLD 192(BX), Y6, Y6
	VPMULLD 224(BX), Y7, Y7

	// Register j now holds coefficient j of every row, so that the row
	// pass below runs on the 8 rows at once, one per lane.
	TRANSPOSE(Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15)

	// Row pass (idctRows): x0=Y8 x7=Y9 x2=Y10 x5=Y11 x1=Y12 x6=Y13 x3=Y14 x4=Y15.
	VPSLLD $17, Y8, Y8
	VPSLLD $17, Y12, Y12
	BFLY(Y8, Y12, Y0)
	BOX(Y10, Y14, 0, Y0, Y1, Y2)
	BFLY(Y12, Y10, Y0)
	BFLY(Y8, Y14, Y0)

	VPSLLD $7, Y15, Y15
	VPSLLD $7, Y9, Y9
	BFLY(Y9, Y15, Y0)
	VPMULLD K(3), Y13, Y13
	VPMULLD K(3), Y11, Y11
	BFLY(Y9, Y11, Y0)
	BFLY(Y15, Y13, Y0)
	VPSRAD $2, Y15, Y15
	VPSRAD $2, Y9, Y9
	BOX(Y15, Y9, 4, Y0, Y1, Y2)
	VPSRAD $2, Y11, Y11
	VPSRAD $2, Y13, Y13
	BOX(Y11, Y13, 7, Y0, Y1, Y2)

	BFLY(Y8, Y9, Y0)
	BFLY(Y12, Y13, Y0)
	BFLY(Y10, Y11, Y0)
	BFLY(Y14, Y15, Y0)

	// Outputs 0-7 of the rows are in Y8, Y12, Y10, Y14, Y15, Y11, Y13, Y9:
	// transposed back, register r holds row r.
	TRANSPOSE(Y8, Y12, Y10, Y14, Y15, Y11, Y13, Y9, Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7)

	// Column pass (idctCols): x0=Y0 x7=Y1 x2=Y2 x5=Y3 x1=Y4 x6=Y5 x3=Y6 x4=Y7.
	VPADDD K(14), Y0, Y0
	VPADDD Y4, Y0, Y8
	VPSUBD Y4, Y0, Y4
	VPSRAD $2, Y8, Y0
	VPSRAD $2, Y4, Y4
	VPSRAD $13, Y2, Y2
	VPSRAD $13, Y6, Y6
	BOX(Y2, Y6, 10, Y8, Y9, Y10)
	BFLY(Y4, Y2, Y8)
	BFLY(Y0, Y6, Y8)

	BFLY(Y1, Y7, Y8)
	VPSRAD $13, Y3, Y3
	VPMULLD K(13), Y3, Y3
	VPSRAD $13, Y5, Y5
	VPMULLD K(13), Y5, Y5
	BFLY(Y1, Y3, Y8)
	BFLY(Y7, Y5, Y8)
	VPSRAD $14, Y7, Y7
	VPSRAD $14, Y1, Y1
	BOX(Y7, Y1, 4, Y8, Y9, Y10)
	VPSRAD $14, Y3, Y3
	VPSRAD $14, Y5, Y5
	BOX(Y3, Y5, 7, Y8, Y9, Y10)

	BFLY(Y0, Y1, Y8)
	BFLY(Y4, Y5, Y8)
	BFLY(Y2, Y3, Y8)
	BFLY(Y6, Y7, Y8)

	// Rows 0-7 are x0-x7: Y0, Y4, Y2, Y6, Y7, Y3, Y5, Y1.
	VPSRAD $18, Y0, Y0
	VPSRAD $18, Y4, Y4
	VPSRAD $18, Y2, Y2
	VPSRAD $18, Y6, Y6
	VPSRAD $18, Y7, Y7
	VPSRAD $18, Y3, Y3
	VPSRAD $18, Y5, Y5
	VPSRAD $18, Y1, Y1

	// Level shift and clamp: the values fit int16 (x>>18 of an int32),
	// so packing to int16, adding 128 and packing to uint8 with unsigned
	// saturation is image/jpeg's clamp.
	VPACKSSDW Y4, Y0, Y8
	VPACKSSDW Y6, Y2, Y9
	VPACKSSDW Y3, Y7, Y10
	VPACKSSDW Y1, Y5, Y11
	VPADDW K(15), Y8, Y8
	VPADDW K(15), Y9, Y9
	VPADDW K(15), Y10, Y10
	VPADDW K(15), Y11, Y11
	VPACKUSWB Y9, Y8, Y8
	VPACKUSWB Y11, Y10, Y10
	// Lanes hold rows 0-3 (4-7) as 4-byte halves: put each row's two
	// halves together.
	VMOVDQU K(16), Y12
	VPERMD Y8, Y12, Y8
	VPERMD Y10, Y12, Y10

	LEAQ (DX)(DX*2), R8
	VMOVQ X8, (DI)
	VPEXTRQ $1, X8, (DI)(DX*1)
	VEXTRACTI128 $1, Y8, X9
	VMOVQ X9, (DI)(DX*2)
	VPEXTRQ $1, X9, (DI)(R8*1)
	LEAQ (DI)(DX*4), DI
	VMOVQ X10, (DI)
	VPEXTRQ $1, X10, (DI)(DX*1)
	VEXTRACTI128 $1, Y10, X11
	VMOVQ X11, (DI)(DX*2)
	VPEXTRQ $1, X11, (DI)(R8*1)

	VZEROUPPER
	RET
