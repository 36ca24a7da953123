# 32-bit x86, which unwind tables do not describe.
	.text
	.globl f
	.type f, @function
f:
	.cfi_startproc
	push %ebp
	.cfi_def_cfa_offset 8
	pop %ebp
	.cfi_def_cfa_offset 4
	ret
	.cfi_endproc
	.size f, .-f
