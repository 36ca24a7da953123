# Hand-written .eh_frame (no .cfi directives) with FDEs that overlap, repeat or are empty, which
# compilers do not emit but linkers and hand-written assembly can.
	.text
	.p2align 4
	.globl outer
	.type outer, @function
outer:
	.fill 32, 1, 0x90
	.size outer, .-outer
	.p2align 4
	.globl twice
	.type twice, @function
twice:
	.fill 8, 1, 0x90
	.size twice, .-twice

	.section .eh_frame,"a",@unwind
cie:
	.long cie_end - cie_id		# length
cie_id:
	.long 0				# CIE id
	.byte 1				# version
	.asciz "zR"
	.uleb128 1			# code alignment
	.sleb128 -8			# data alignment
	.uleb128 16			# return address column
	.uleb128 1			# augmentation data length
	.byte 0x1b			# FDE addresses: pcrel sdata4
	.byte 0x0c, 7, 8		# DW_CFA_def_cfa rsp+8
	.byte 0x90, 1			# DW_CFA_offset rip, cfa-8
	.p2align 3, 0
cie_end:

	# outer [0, 32): cfa rsp+16 from 1, rsp+24 from 16.
	.long 1f - 0f
0:	.long 0b - cie
	.long outer - .
	.long 32
	.uleb128 0
	.byte 0x41, 0x0e, 16		# advance 1; DW_CFA_def_cfa_offset 16
	.byte 0x4f, 0x0e, 24		# advance 15; DW_CFA_def_cfa_offset 24
	.p2align 3, 0
1:
	# inner [8, 16), inside outer: cfa rsp+32.
	.long 1f - 0f
0:	.long 0b - cie
	.long outer + 8 - .
	.long 8
	.uleb128 0
	.byte 0x0e, 32			# DW_CFA_def_cfa_offset 32
	.p2align 3, 0
1:
	# empty, at 24.
	.long 1f - 0f
0:	.long 0b - cie
	.long outer + 24 - .
	.long 0
	.uleb128 0
	.p2align 3, 0
1:
	# twice [0, 8) with cfa rsp+40, then again with cfa rsp+48.
	.long 1f - 0f
0:	.long 0b - cie
	.long twice - .
	.long 8
	.uleb128 0
	.byte 0x0e, 40
	.p2align 3, 0
1:
	.long 1f - 0f
0:	.long 0b - cie
	.long twice - .
	.long 8
	.uleb128 0
	.byte 0x0e, 48
	.p2align 3, 0
1:
	.long 0				# terminator
