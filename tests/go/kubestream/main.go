// kubestream speaks the kubelet's streaming protocols over SPDY/3.1 the
// way kubectl does (client-go's remotecommand v4 and portforward), built
// on spdystream, the SPDY library kubectl and the kubelet use. The tests
// run it against hulld's streaming URLs.
//
//	kubestream exec URL [-stdin] [-stderr] [-tty WxH] [-status FILE] [-expect TEXT]
//	kubestream portforward URL PORT
//
// exec (and attach, which speaks the same) copies its stdin to the
// stdin stream, the stdout and stderr streams to its own, and writes the
// error stream's status to FILE; with -expect it hangs up once stdout
// holds TEXT. portforward sends its stdin to PORT and prints
// what comes back.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/spdystream"
)

func dial(raw, protocol string) *spdystream.Connection {
	u, err := url.Parse(raw)
	if err != nil {
		fail("url: %v", err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		fail("dial: %v", err)
	}
	req, _ := http.NewRequest("POST", raw, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	req.Header.Add("X-Stream-Protocol-Version", protocol)
	if protocol == "v4.channel.k8s.io" {
		// kubectl offers older versions too.
		req.Header.Add("X-Stream-Protocol-Version", "v3.channel.k8s.io")
		req.Header.Add("X-Stream-Protocol-Version", "v2.channel.k8s.io")
		req.Header.Add("X-Stream-Protocol-Version", "channel.k8s.io")
	}
	if err := req.Write(conn); err != nil {
		fail("request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		fail("response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		fail("upgrade refused: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if got := resp.Header.Get("X-Stream-Protocol-Version"); got != protocol {
		fail("server chose protocol %q", got)
	}
	c, err := spdystream.NewConnection(conn, false)
	if err != nil {
		fail("spdy: %v", err)
	}
	go c.Serve(spdystream.NoOpStreamHandler)
	return c
}

func open(c *spdystream.Connection, h http.Header) *spdystream.Stream {
	s, err := c.CreateStream(h, nil, false)
	if err != nil {
		fail("create stream: %v", err)
	}
	if err := s.WaitTimeout(30 * time.Second); err != nil {
		fail("stream %v not accepted: %v", h, err)
	}
	return s
}

func stream(c *spdystream.Connection, kind string) *spdystream.Stream {
	h := http.Header{}
	h.Set("streamType", kind)
	return open(c, h)
}

func fail(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "kubestream: "+f+"\n", a...)
	os.Exit(2)
}

// watch copies r to w; with expect set, closes done once what went
// through holds it.
type watch struct {
	mu     sync.Mutex
	seen   bytes.Buffer
	expect string
	done   chan struct{}
	once   sync.Once
}

func (w *watch) Write(p []byte) (int, error) {
	os.Stdout.Write(p)
	if w.expect != "" {
		w.mu.Lock()
		w.seen.Write(p)
		hit := strings.Contains(w.seen.String(), w.expect)
		w.mu.Unlock()
		if hit {
			w.once.Do(func() { close(w.done) })
		}
	}
	return len(p), nil
}

func execCmd(args []string) {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	stdin := fs.Bool("stdin", false, "send stdin")
	stderr := fs.Bool("stderr", false, "receive stderr")
	tty := fs.String("tty", "", "a terminal of this size (WxH)")
	expect := fs.String("expect", "", "hang up once stdout holds this")
	statusFile := fs.String("status", "", "where the status goes")
	fs.Parse(args[1:])
	c := dial(args[0], "v4.channel.k8s.io")
	errStream := stream(c, "error")
	var in *spdystream.Stream
	if *stdin {
		in = stream(c, "stdin")
	}
	out := stream(c, "stdout")
	var errOut *spdystream.Stream
	if *stderr && *tty == "" {
		errOut = stream(c, "stderr")
	}
	if *tty != "" {
		resize := stream(c, "resize")
		var w, h int
		fmt.Sscanf(*tty, "%dx%d", &w, &h)
		fmt.Fprintf(resize, `{"Width":%d,"Height":%d}`, w, h)
	}
	if in != nil {
		go func() {
			io.Copy(in, os.Stdin)
			if *tty == "" {
				in.Close()
			}
		}()
	}
	w := &watch{expect: *expect, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); io.Copy(w, out) }()
	if errOut != nil {
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(os.Stderr, errOut) }()
	}
	if *expect != "" {
		select {
		case <-w.done:
		case <-time.After(60 * time.Second):
			fail("stdout never held %q", *expect)
		}
		c.Close()
		return
	}
	wg.Wait()
	status, _ := io.ReadAll(errStream)
	if *statusFile != "" {
		if err := os.WriteFile(*statusFile, status, 0o600); err != nil {
			fail("status: %v", err)
		}
	}
	c.Close()
}

func portForward(args []string) {
	if len(args) != 2 {
		fail("portforward URL PORT")
	}
	if _, err := strconv.Atoi(args[1]); err != nil {
		fail("port: %v", err)
	}
	c := dial(args[0], "portforward.k8s.io")
	h := http.Header{}
	h.Set("streamType", "error")
	h.Set("port", args[1])
	h.Set("requestID", "0")
	errStream := open(c, h)
	h.Set("streamType", "data")
	data := open(c, h)
	go func() {
		io.Copy(data, os.Stdin)
		data.Close()
	}()
	io.Copy(os.Stdout, data)
	msg, _ := io.ReadAll(errStream)
	c.Close()
	if len(msg) > 0 {
		fmt.Fprintf(os.Stderr, "%s\n", msg)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: kubestream exec|portforward URL ...")
	}
	switch os.Args[1] {
	case "exec", "attach":
		execCmd(os.Args[2:])
	case "portforward":
		portForward(os.Args[2:])
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
