// A known Go call tree for profiler tests: main.main -> {main.hotA, main.hotB} -> main.leafWork.
// hotA asks leafWork for three times the iterations of hotB, so main.hotA;main.leafWork should get
// ~75 % of the samples and main.hotB;main.leafWork ~25 %. //go:noinline keeps every frame real
// (no inline tree at these PCs; see inl/ for that). Prints "ready", then runs until killed.
package main

import "os"

// sink keeps the results live, so the compiler cannot drop the calls.
var sink int

//go:noinline
func leafWork(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += i * i % 7
	}
	return s
}

//go:noinline
func hotA() int { return leafWork(3000000) }

//go:noinline
func hotB() int { return leafWork(1000000) }

func main() {
	os.Stdout.WriteString("ready\n")
	for {
		sink += hotA()
		sink += hotB()
	}
}
