# The outermost frame (undefined return address), a function without CFI between two with CFI
# (a gap), and a PLT-like stub with the standard x86_64 PLT CFA expression.
	.text
	.p2align 4
	.globl _start
	.type _start, @function
_start:
	.cfi_startproc
	.cfi_undefined rip
	xor %ebp, %ebp
	call with_cfi
	hlt
	.cfi_endproc
	.size _start, .-_start

	.p2align 4
	.globl no_cfi
	.type no_cfi, @function
no_cfi:
	nop
	ret
	.size no_cfi, .-no_cfi

	.p2align 4
	.globl with_cfi
	.type with_cfi, @function
with_cfi:
	.cfi_startproc
	push %rbx
	.cfi_def_cfa_offset 16
	.cfi_offset %rbx, -16
	pop %rbx
	.cfi_def_cfa_offset 8
	ret
	.cfi_endproc
	.size with_cfi, .-with_cfi

	.p2align 4
	.globl plt
	.type plt, @function
plt:
	.cfi_startproc
	.cfi_def_cfa_offset 16
	pushq 0(%rip)			# 6 bytes
	.cfi_def_cfa_offset 24
	jmp *0(%rip)			# 6 bytes
	nopl 0(%rax)			# 4 bytes
	# DW_CFA_def_cfa_expression, the 11-byte PLT expression
	.globl plt_lazy
plt_lazy:
	.cfi_escape 0x0f, 0x0b, 0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22
	jmp *0(%rip)
	pushq $0
	jmp plt
	# The same shape with lit12 instead of lit11: not the standard expression.
	.globl plt_other
plt_other:
	.cfi_escape 0x0f, 0x0b, 0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3c, 0x2a, 0x33, 0x24, 0x22
	jmp *0(%rip)
	.cfi_endproc
	.size plt, .-plt
