# A signal frame with plain rules, and a sigreturn trampoline whose CFA is a DWARF expression
# (as in glibc's __restore_rt): the first maps normally, the second is unsupported.
	.text
	.p2align 4
	.globl signal_frame
	.type signal_frame, @function
signal_frame:
	.cfi_startproc
	.cfi_signal_frame
	nop
	push %rbp
	.cfi_def_cfa_offset 16
	.cfi_offset %rbp, -16
	pop %rbp
	.cfi_def_cfa_offset 8
	ret
	.cfi_endproc
	.size signal_frame, .-signal_frame

	.p2align 4
	.globl restore_rt
	.type restore_rt, @function
restore_rt:
	.cfi_startproc simple
	.cfi_signal_frame
	# DW_CFA_def_cfa_expression: DW_OP_breg7 (rsp) 160; DW_OP_deref
	.cfi_escape 0x0f, 0x04, 0x77, 0xa0, 0x01, 0x06
	# DW_CFA_expression rip: DW_OP_breg7 (rsp) 168
	.cfi_escape 0x10, 0x10, 0x03, 0x77, 0xa8, 0x01
	nop
	mov $15, %rax
	syscall
	.cfi_endproc
	.size restore_rt, .-restore_rt
