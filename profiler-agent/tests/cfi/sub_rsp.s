# A frame without a frame pointer (sub/add %rsp), and one too large for a 16-bit offset.
	.text
	.p2align 4
	.globl sub_rsp
	.type sub_rsp, @function
sub_rsp:
	.cfi_startproc
	sub $40, %rsp			# 4 bytes
	.cfi_def_cfa_offset 48
	nop
	add $40, %rsp			# 4 bytes
	.cfi_def_cfa_offset 8
	ret
	.cfi_endproc
	.size sub_rsp, .-sub_rsp

	.p2align 4
	.globl huge_frame
	.type huge_frame, @function
huge_frame:
	.cfi_startproc
	sub $0x100000, %rsp		# 7 bytes
	.cfi_def_cfa_offset 0x100008
	add $0x100000, %rsp		# 7 bytes
	.cfi_def_cfa_offset 8
	ret
	.cfi_endproc
	.size huge_frame, .-huge_frame
