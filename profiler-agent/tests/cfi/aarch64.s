# aarch64: a frame record prologue (with pointer authentication), a leaf without a frame, and
# the outermost frame.
	.text
	.p2align 4
	.globl frame
	.type frame, %function
frame:
	.cfi_startproc
	paciasp
	.cfi_negate_ra_state
	stp x29, x30, [sp, #-16]!
	.cfi_def_cfa_offset 16
	.cfi_offset 29, -16
	.cfi_offset 30, -8
	mov x29, sp
	.cfi_def_cfa 29, 16
	bl leaf
	ldp x29, x30, [sp], #16
	.cfi_def_cfa 31, 0
	.cfi_restore 30
	.cfi_restore 29
	autiasp
	.cfi_negate_ra_state
	ret
	.cfi_endproc
	.size frame, .-frame

	.p2align 4
	.globl leaf
	.type leaf, %function
leaf:
	.cfi_startproc
	add x0, x0, #1
	ret
	.cfi_endproc
	.size leaf, .-leaf

	.p2align 4
	.globl _start
	.type _start, %function
_start:
	.cfi_startproc
	.cfi_undefined x30
	mov x29, #0
	bl frame
	b .
	.cfi_endproc
	.size _start, .-_start
