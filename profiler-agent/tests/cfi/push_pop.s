# A frame-pointer prologue and epilogue: push %rbp; mov %rsp, %rbp; ...; pop %rbp.
	.text
	.p2align 4
	.globl push_pop
	.type push_pop, @function
push_pop:
	.cfi_startproc
	push %rbp			# 1 byte
	.cfi_def_cfa_offset 16
	.cfi_offset %rbp, -16
	mov %rsp, %rbp			# 3 bytes
	.cfi_def_cfa_register %rbp
	nop
	pop %rbp			# 1 byte
	.cfi_def_cfa %rsp, 8
	ret
	.cfi_endproc
	.size push_pop, .-push_pop
