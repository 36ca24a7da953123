// An inline tree at the hot PC: square has no //go:noinline and a tiny body, so the compiler
// inlines it into inlineCaller (check with `go build -gcflags=-m`: "inlining call to square").
// A symbolizer that reads only the function table names main.inlineCaller for the hot loop; one
// that reads the pclntab's inline tree (FUNCDATA_InlTree, PCDATA_InlTreeIndex) names
// main.square inlined into main.inlineCaller. Prints "ready", then runs until killed.
package main

import "os"

var sink int

func square(x int) int { return x * x % 7 }

//go:noinline
func inlineCaller(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += square(i)
	}
	return s
}

func main() {
	os.Stdout.WriteString("ready\n")
	for {
		sink += inlineCaller(1000000)
	}
}
