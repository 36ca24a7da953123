// Goroutine-heavy net/http load in one process: an HTTP server on 127.0.0.1 (a free port) and
// 50 client goroutines that request from it in a loop. The handler hashes a few KiB
// (crypto/sha256) and writes the digest, so samples land in user code, the runtime's scheduler
// and netpoller, net/http and the kernel's TCP stack, across many goroutines and threads.
// Clients keep their connections alive (one idle connection per client) and pause briefly
// after each response: both CPUs are busy but not saturated, and the loop never runs out of
// ephemeral ports. Prints "ready" once the server listens, then runs until killed.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

const (
	clients = 50
	// Pause after each response, per client.
	pause = 2 * time.Millisecond
	// Bytes hashed per request.
	work = 4 << 10
)

var payload = make([]byte, work)

func handle(w http.ResponseWriter, r *http.Request) {
	// Every request hashes its own copy of the payload (a little allocation, a little GC).
	buf := append([]byte(r.URL.Path), payload...)
	sum := sha256.Sum256(buf)
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, hex.EncodeToString(sum[:]))
}

func client(id int, url string, c *http.Client) {
	for i := 0; ; i++ {
		resp, err := c.Get(fmt.Sprintf("%s/%d/%d", url, id, i))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		time.Sleep(pause)
	}
}

func main() {
	for i := range payload {
		payload[i] = byte(i * 31)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", handle)
	go func() {
		err := http.Serve(ln, mux)
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}()
	url := "http://" + ln.Addr().String()
	c := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        clients,
		MaxIdleConnsPerHost: clients,
		DisableCompression:  true,
	}}
	for id := 0; id < clients; id++ {
		go client(id, url, c)
	}
	fmt.Fprintln(os.Stderr, "serving on", url)
	os.Stdout.WriteString("ready\n")
	select {}
}
