//go:build amd64 && !purego

#include "textflag.h"

// BROADCAST fills Y0 with line feeds and Y1-Y4 with the four bytes packed
// in AX, one in every lane; it uses BX.
#define BROADCAST \
	MOVL $0x0a, BX \
	MOVQ BX, X0 \
	VPBROADCASTB X0, Y0 \
	MOVL AX, BX \
	ANDL $0xff, BX \
	MOVQ BX, X1 \
	VPBROADCASTB X1, Y1 \
	SHRL $8, AX \
	MOVL AX, BX \
	ANDL $0xff, BX \
	MOVQ BX, X2 \
	VPBROADCASTB X2, Y2 \
	SHRL $8, AX \
	MOVL AX, BX \
	ANDL $0xff, BX \
	MOVQ BX, X3 \
	VPBROADCASTB X3, Y3 \
	SHRL $8, AX \
	MOVQ AX, X4 \
	VPBROADCASTB X4, Y4


// LFCOUNT adds to R8 the line feeds of the chunk whose comparisons with Y0
// are in Y11 and Y12; it uses AX and BX.
#define LFCOUNT \
	VPMOVMSKB Y11, AX \
	VPMOVMSKB Y12, BX \
	POPCNTL   AX, AX \
	POPCNTL   BX, BX \
	ADDQ      AX, R8 \
	ADDQ      BX, R8

// func chunkAVX2(b []byte, set uint32, two bool) (nl int, off int, cand uint64, lf uint64)
//
// b's length is a multiple of 64. Counts the line feeds of the 64-byte
// chunks of b up to the first chunk holding one of the four bytes packed in
// set, and returns that chunk's offset with two masks of it, bit i for byte
// i: the bytes of set, and the line feeds. off is -1 when no chunk holds
// one, nl then counting every line feed of b. With two, only the first two
// bytes of set are compared (the other two repeat them): two comparisons
// fewer per 32 bytes, for the usual case of one or two picked bytes.
TEXT ·chunkAVX2(SB), NOSPLIT, $0-64
	MOVQ b_base+0(FP), SI
	MOVQ b_len+8(FP), DX
	MOVL set+24(FP), AX
	MOVBLZX two+28(FP), R9
	MOVQ SI, DI
	XORQ R8, R8

	BROADCAST

	TESTQ DX, DX
	JZ    none
	TESTQ R9, R9
	JNZ   loop2

loop4:
	VMOVDQU (SI), Y5
	VMOVDQU 32(SI), Y6

	VPCMPEQB Y5, Y1, Y7
	VPCMPEQB Y5, Y2, Y8
	VPOR     Y7, Y8, Y7
	VPCMPEQB Y5, Y3, Y8
	VPOR     Y7, Y8, Y7
	VPCMPEQB Y5, Y4, Y8
	VPOR     Y7, Y8, Y7

	VPCMPEQB Y6, Y1, Y9
	VPCMPEQB Y6, Y2, Y10
	VPOR     Y9, Y10, Y9
	VPCMPEQB Y6, Y3, Y10
	VPOR     Y9, Y10, Y9
	VPCMPEQB Y6, Y4, Y10
	VPOR     Y9, Y10, Y9

	VPCMPEQB Y5, Y0, Y11
	VPCMPEQB Y6, Y0, Y12

	VPOR   Y7, Y9, Y13
	VPTEST Y13, Y13
	JNZ    found

	LFCOUNT

	ADDQ $64, SI
	SUBQ $64, DX
	JNZ  loop4
	JMP  none

loop2:
	VMOVDQU (SI), Y5
	VMOVDQU 32(SI), Y6

	VPCMPEQB Y5, Y1, Y7
	VPCMPEQB Y5, Y2, Y8
	VPOR     Y7, Y8, Y7

	VPCMPEQB Y6, Y1, Y9
	VPCMPEQB Y6, Y2, Y10
	VPOR     Y9, Y10, Y9

	VPCMPEQB Y5, Y0, Y11
	VPCMPEQB Y6, Y0, Y12

	VPOR   Y7, Y9, Y13
	VPTEST Y13, Y13
	JNZ    found

	LFCOUNT

	ADDQ $64, SI
	SUBQ $64, DX
	JNZ  loop2

none:
	MOVQ R8, nl+32(FP)
	MOVQ $-1, off+40(FP)
	MOVQ $0, cand+48(FP)
	MOVQ $0, lf+56(FP)
	VZEROUPPER
	RET

found:
	VPMOVMSKB Y7, AX
	VPMOVMSKB Y9, CX
	SHLQ      $32, CX
	ORQ       CX, AX
	VPMOVMSKB Y11, BX
	VPMOVMSKB Y12, CX
	SHLQ      $32, CX
	ORQ       CX, BX
	SUBQ      DI, SI
	MOVQ      R8, nl+32(FP)
	MOVQ      SI, off+40(FP)
	MOVQ      AX, cand+48(FP)
	MOVQ      BX, lf+56(FP)
	VZEROUPPER
	RET

// func chunkAVX2CR(b []byte, set uint32) (nl int, off int, cand uint64, lf uint64)
//
// chunkAVX2 for input with CRLF line breaks: a carriage return is marked
// in cand only when it is lone (the byte after it is not a line feed), so
// that CRLF lines cost no stop. The byte after each chunk is read with an
// unaligned load one byte on: b must be followed by at least one readable
// byte, which the caller guarantees by passing a prefix of its block. All
// four bytes of set are compared.
TEXT ·chunkAVX2CR(SB), NOSPLIT, $0-64
	MOVQ b_base+0(FP), SI
	MOVQ b_len+8(FP), DX
	MOVL set+24(FP), AX
	MOVQ SI, DI
	XORQ R8, R8

	BROADCAST
	MOVL $0x0d, BX
	MOVQ BX, X14
	VPBROADCASTB X14, Y14

	TESTQ DX, DX
	JZ    crnone

crloop:
	VMOVDQU (SI), Y5
	VMOVDQU 32(SI), Y6

	VPCMPEQB Y5, Y1, Y7
	VPCMPEQB Y5, Y2, Y8
	VPOR     Y7, Y8, Y7
	VPCMPEQB Y5, Y3, Y8
	VPOR     Y7, Y8, Y7
	VPCMPEQB Y5, Y4, Y8
	VPOR     Y7, Y8, Y7

	VPCMPEQB Y6, Y1, Y9
	VPCMPEQB Y6, Y2, Y10
	VPOR     Y9, Y10, Y9
	VPCMPEQB Y6, Y3, Y10
	VPOR     Y9, Y10, Y9
	VPCMPEQB Y6, Y4, Y10
	VPOR     Y9, Y10, Y9

	// Lone carriage returns: a CR whose next byte is not a line feed.
	VMOVDQU  1(SI), Y8
	VPCMPEQB Y8, Y0, Y8
	VPCMPEQB Y5, Y14, Y10
	VPANDN   Y10, Y8, Y10
	VPOR     Y7, Y10, Y7
	VMOVDQU  33(SI), Y8
	VPCMPEQB Y8, Y0, Y8
	VPCMPEQB Y6, Y14, Y10
	VPANDN   Y10, Y8, Y10
	VPOR     Y9, Y10, Y9

	VPCMPEQB Y5, Y0, Y11
	VPCMPEQB Y6, Y0, Y12

	VPOR   Y7, Y9, Y13
	VPTEST Y13, Y13
	JNZ    crfound

	LFCOUNT

	ADDQ $64, SI
	SUBQ $64, DX
	JNZ  crloop

crnone:
	MOVQ R8, nl+32(FP)
	MOVQ $-1, off+40(FP)
	MOVQ $0, cand+48(FP)
	MOVQ $0, lf+56(FP)
	VZEROUPPER
	RET

crfound:
	VPMOVMSKB Y7, AX
	VPMOVMSKB Y9, CX
	SHLQ      $32, CX
	ORQ       CX, AX
	VPMOVMSKB Y11, BX
	VPMOVMSKB Y12, CX
	SHLQ      $32, CX
	ORQ       CX, BX
	SUBQ      DI, SI
	MOVQ      R8, nl+32(FP)
	MOVQ      SI, off+40(FP)
	MOVQ      AX, cand+48(FP)
	MOVQ      BX, lf+56(FP)
	VZEROUPPER
	RET
