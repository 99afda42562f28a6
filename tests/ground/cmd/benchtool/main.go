// Command benchtool supports `make bench` (scripts/bench.sh, bench/bench.py):
//
//	benchtool ceiling  parallel multipart PUTs of one in-memory buffer, no checksums and unsigned
//	                   payloads, so the client costs as little as possible: the S3 server's ceiling
//	                   (warp is AGPL and not available on the build machines).
//	benchtool proxy    a TCP proxy that counts the bytes each way (the resume workload's
//	                   "bytes sent"), writing the running totals to a file.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool ceiling|proxy [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "ceiling":
		err = ceiling(os.Args[2:])
	case "proxy":
		err = proxy(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

func ceiling(args []string) error {
	fs := flag.NewFlagSet("ceiling", flag.ExitOnError)
	endpoint := fs.String("endpoint", os.Getenv("S3_ENDPOINT"), "S3 endpoint")
	region := fs.String("region", "us-east-1", "region")
	bucket := fs.String("bucket", "", "bucket")
	prefix := fs.String("prefix", "ceiling/", "key prefix")
	objects := fs.Int("objects", 1, "objects to write")
	objSize := fs.Int64("object-size", 1<<30, "bytes per object")
	partSize := fs.Int64("part-size", 16<<20, "bytes per part")
	conc := fs.Int("concurrency", 8, "parts in flight")
	_ = fs.Parse(args)
	if *bucket == "" {
		return fmt.Errorf("-bucket is required")
	}
	ak, sk := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	tr := &http.Transport{MaxIdleConns: *conc * 2, MaxIdleConnsPerHost: *conc * 2, MaxConnsPerHost: 0,
		IdleConnTimeout: time.Minute, DisableCompression: true, WriteBufferSize: 1 << 20, ReadBufferSize: 64 << 10}
	cli := s3.New(s3.Options{
		Region: *region, BaseEndpoint: endpoint, UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(ak, sk, ""),
		HTTPClient:                 &http.Client{Transport: tr},
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		Retryer:                    aws.NopRetryer{},
	}, s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware))
	buf := make([]byte, *partSize)
	x := uint64(0x9E3779B97F4A7C15)
	for i := 0; i+8 <= len(buf); i += 8 { // xorshift: incompressible, cheap
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for b := 0; b < 8; b++ {
			buf[i+b] = byte(x >> (8 * b))
		}
	}
	ctx := context.Background()
	type job struct {
		obj, part int
		id        string
		size      int64
	}
	start := time.Now()
	ids := make([]string, *objects)
	etags := make([][]types.CompletedPart, *objects)
	nparts := int((*objSize + *partSize - 1) / *partSize)
	for o := range ids {
		out, err := cli.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: bucket, Key: aws.String(fmt.Sprintf("%s%04d", *prefix, o))})
		if err != nil {
			return err
		}
		ids[o] = *out.UploadId
		etags[o] = make([]types.CompletedPart, nparts)
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	// Each object is completed as soon as its last part is stored, by the worker that stored it,
	// so with several objects the server's completion work overlaps the other objects' parts.
	left := make([]atomic.Int64, *objects)
	for o := range left {
		left[o].Store(int64(nparts))
	}
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				out, err := cli.UploadPart(ctx, &s3.UploadPartInput{Bucket: bucket, Key: aws.String(fmt.Sprintf("%s%04d", *prefix, j.obj)),
					UploadId: &j.id, PartNumber: aws.Int32(int32(j.part)), Body: bytes.NewReader(buf[:j.size]), ContentLength: aws.Int64(j.size)})
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				etags[j.obj][j.part-1] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(j.part))}
				if left[j.obj].Add(-1) == 0 {
					if _, err := cli.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: bucket, Key: aws.String(fmt.Sprintf("%s%04d", *prefix, j.obj)),
						UploadId: &j.id, MultipartUpload: &types.CompletedMultipartUpload{Parts: etags[j.obj]}}); err != nil {
						firstErr.CompareAndSwap(nil, err)
					}
				}
			}
		}()
	}
	for o := range ids {
		for p := 1; p <= nparts; p++ {
			sz := *partSize
			if rem := *objSize - int64(p-1)**partSize; rem < sz {
				sz = rem
			}
			jobs <- job{obj: o, part: p, id: ids[o], size: sz}
		}
	}
	close(jobs)
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return e.(error)
	}
	secs := time.Since(start).Seconds()
	total := float64(*objSize) * float64(*objects)
	fmt.Printf("bytes=%d seconds=%.3f mbps=%.1f\n", int64(total), secs, total/secs/1e6)
	return nil
}

func proxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "host:port to forward to")
	portFile := fs.String("port-file", "", "write the listening port here")
	countFile := fs.String("count-file", "", "write 'up down' byte counts here every 50 ms and on exit")
	dumpFile := fs.String("dump-headers", "", "append the request lines and headers seen (Authorization redacted) here")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	var up, down atomic.Int64
	write := func() {
		if *countFile != "" {
			tmp := *countFile + ".tmp"
			_ = os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", up.Load(), down.Load())), 0o644)
			_ = os.Rename(tmp, *countFile)
		}
	}
	if *portFile != "" {
		if err := os.WriteFile(*portFile, []byte(fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)), 0o644); err != nil {
			return err
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for {
			select {
			case <-sig:
				write()
				os.Exit(0)
			case <-time.After(50 * time.Millisecond):
				write()
			}
		}
	}()
	var dumpMu sync.Mutex
	var dump *os.File
	if *dumpFile != "" {
		if dump, err = os.OpenFile(*dumpFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return err
		}
	}
	pump := func(dst, src net.Conn, n *atomic.Int64) {
		b := make([]byte, 256<<10)
		for {
			k, err := src.Read(b)
			if k > 0 {
				if dump != nil && n == &up {
					dumpMu.Lock()
					dumpHeaders(dump, b[:k])
					dumpMu.Unlock()
				}
				n.Add(int64(k))
				if _, werr := dst.Write(b[:k]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func(c net.Conn) {
			u, err := net.Dial("tcp", *upstream)
			if err != nil {
				c.Close()
				return
			}
			done := make(chan struct{}, 2)
			go func() { pump(u, c, &up); done <- struct{}{} }()
			go func() { pump(c, u, &down); done <- struct{}{} }()
			<-done
			<-done
			c.Close()
			u.Close()
		}(c)
	}
}

var _ = io.EOF

// dumpHeaders writes every HTTP/1.1 request head found whole inside one read (SDKs write the
// head in one go), with the Authorization value redacted.
func dumpHeaders(w io.Writer, b []byte) {
	for {
		i := bytes.Index(b, []byte(" HTTP/1.1\r\n"))
		if i < 0 {
			return
		}
		start := bytes.LastIndex(b[:i], []byte("\n")) + 1
		end := bytes.Index(b[i:], []byte("\r\n\r\n"))
		if end < 0 {
			return
		}
		for _, line := range bytes.Split(b[start:i+end], []byte("\r\n")) {
			if bytes.HasPrefix(bytes.ToLower(line), []byte("authorization:")) {
				line = []byte("Authorization: (redacted)")
			}
			fmt.Fprintf(w, "%s\n", line)
		}
		fmt.Fprintln(w)
		b = b[i+end+4:]
	}
}
