# An early return in the middle of a function: the CFI after it restores the remembered state.
	.text
	.p2align 4
	.globl remember_state
	.type remember_state, @function
remember_state:
	.cfi_startproc
	push %rbp			# 1 byte
	.cfi_def_cfa_offset 16
	.cfi_offset %rbp, -16
	test %edi, %edi			# 2 bytes
	je 1f				# 2 bytes
	.cfi_remember_state
	pop %rbp			# 1 byte
	.cfi_restore %rbp
	.cfi_def_cfa_offset 8
	ret				# 1 byte
1:
	.cfi_restore_state
	nop
	pop %rbp
	.cfi_def_cfa_offset 8
	ret
	.cfi_endproc
	.size remember_state, .-remember_state
