package node

// A network namespace per pod whose containers run with runc, shared by the pod's containers as
// a kubelet's sandbox is: its own loopback, so two pods listen on the same port without
// clashing. The ground's own services (API server, S3 servers) stay reachable at their usual
// 127.0.0.1 addresses through a forwarder listening inside the namespace, as a node-local proxy
// would; pods have no address besides loopback (no pod-to-pod traffic, no Services).

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// podNetwork is one pod's network namespace and the forwarders into it.
type podNetwork struct {
	path      string // bind mount of the namespace, for runc's spec
	listeners []net.Listener
	wg        sync.WaitGroup
}

// newPodNetwork creates the namespace at path, brings its loopback up and forwards each port
// of 127.0.0.1 inside it to the same port of the host's loopback.
func newPodNetwork(path string, ports []int) (*podNetwork, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	n := &podNetwork{path: path}
	err := inNewThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("failed to create a network namespace: %w", err)
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		f.Close()
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("failed to keep the network namespace: %w", err)
		}
		if err := loopbackUp(); err != nil {
			return err
		}
		for _, port := range ports {
			ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return fmt.Errorf("failed to listen on port %d in the pod's network: %w", port, err)
			}
			n.listeners = append(n.listeners, ln)
		}
		return nil
	})
	if err != nil {
		n.close()
		return nil, err
	}
	for i, ln := range n.listeners {
		n.wg.Add(1)
		go n.forward(ln, ports[i])
	}
	return n, nil
}

// inNewThread runs fn on an OS thread locked for it, then returns that thread to the host's
// network namespace. A thread that cannot go back is thrown away with its goroutine; exiting
// threads are otherwise avoided: a child process started with Pdeathsig from a thread is
// signalled when that thread ends.
func inNewThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		host, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer host.Close()
		err = fn()
		if unix.Setns(int(host.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// loopbackUp sets the flags of `lo` to UP, as `ip link set lo up` does.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var req [unix.IFNAMSIZ + 24]byte
	copy(req[:], "lo")
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		return fmt.Errorf("failed to read the flags of lo: %w", e)
	}
	flags := (*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ]))
	*flags |= unix.IFF_UP | unix.IFF_RUNNING
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		return fmt.Errorf("failed to bring lo up: %w", e)
	}
	return nil
}

func (n *podNetwork) forward(ln net.Listener, port int) {
	defer n.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Printf("node: pod network forwarder on port %d: %v", port, err)
			}
			return
		}
		go func() {
			defer conn.Close()
			up, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, conn); closeWrite(up); done <- struct{}{} }()
			go func() { _, _ = io.Copy(conn, up); closeWrite(conn); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// close stops the forwarders and removes the namespace (it goes with its last process).
func (n *podNetwork) close() {
	for _, ln := range n.listeners {
		_ = ln.Close()
	}
	n.wg.Wait()
	_ = unix.Unmount(n.path, unix.MNT_DETACH)
	_ = os.Remove(n.path)
}
