package datastore_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"netman/internal/testsupport/testenv"
	"netman/lib/datastore"
)

func newStore(t *testing.T) (*datastore.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store", "container-metadata.json")
	s, err := datastore.New(path, datastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

func record(handle, ip string) datastore.Container {
	return datastore.Container{Handle: handle, IP: ip, Metadata: map[string]any{"app_id": "app-" + handle}}
}

func TestEmptyDatastore(t *testing.T) {
	_, path := newStore(t)
	records, err := datastore.Read(path)
	if err != nil || len(records) != 0 {
		t.Fatalf("Read of a missing datastore = %v, %v; want empty, nil", records, err)
	}
	if v, err := datastore.Version(path); err != nil || v != datastore.Unwritten {
		t.Fatalf("Version of a missing datastore = %d, %v; want %d, nil", v, err, datastore.Unwritten)
	}
}

func TestAddRemoveAndVersion(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)

	if _, err := s.Add(ctx, record("a", "10.255.0.2")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(ctx, record("b", "10.255.0.3")); err != nil {
		t.Fatal(err)
	}
	got, v, err := datastore.Snapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]datastore.Container{"a": record("a", "10.255.0.2"), "b": record("b", "10.255.0.3")}
	if !reflect.DeepEqual(got, want) || v != 3 {
		t.Fatalf("after two adds: %v version %d; want %v version 3", got, v, want)
	}

	// The file is the plain handle -> record map agents have always read.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	if generic["a"]["ip"] != "10.255.0.2" || generic["a"]["handle"] != "a" || generic["a"]["metadata"].(map[string]any)["app_id"] != "app-a" {
		t.Fatalf("unexpected file content %s", raw)
	}

	found, err := s.Remove(ctx, "a")
	if err != nil || !found {
		t.Fatalf("Remove(a) = %v, %v; want true, nil", found, err)
	}
	found, err = s.Remove(ctx, "a")
	if err != nil || found {
		t.Fatalf("second Remove(a) = %v, %v; want false, nil", found, err)
	}
	if v, _ := datastore.Version(path); v != 4 {
		t.Fatalf("version after a removal and a no-op removal = %d, want 4", v)
	}
	c, ok, err := s.Get("b")
	if err != nil || !ok || c.IP != "10.255.0.3" {
		t.Fatalf("Get(b) = %v %v %v", c, ok, err)
	}
	if _, ok, _ := s.Get("a"); ok {
		t.Fatal("a is still there")
	}
}

func TestMetadataKeptVerbatim(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	meta := map[string]any{}
	dec := json.NewDecoder(strings.NewReader(`{"app_id":"x","big":12345678901234567890,"nested":{"k":[1,"two",null,true]},"frac":0.10}`))
	dec.UseNumber()
	if err := dec.Decode(&meta); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(ctx, datastore.Container{Handle: "h", IP: "10.0.0.1", Metadata: meta}); err != nil {
		t.Fatal(err)
	}
	// Another write rewrites the first record from the decoded file.
	if _, err := s.Add(ctx, record("other", "10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	var generic map[string]struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	want := `{"app_id":"x","big":12345678901234567890,"frac":0.10,"nested":{"k":[1,"two",null,true]}}`
	if string(generic["h"].Metadata) != want {
		t.Fatalf("metadata = %s, want %s", generic["h"].Metadata, want)
	}
}

func TestCorruptFilesAreErrors(t *testing.T) {
	for name, content := range map[string]string{
		"truncated":      `{"a":{"handle":"a","ip":"10.0.0.1"`,
		"null":           `null`,
		"array":          `[]`,
		"trailing data":  `{} {}`,
		"wrong handle":   `{"a":{"handle":"b","ip":"10.0.0.1"}}`,
		"bad ip":         `{"a":{"handle":"a","ip":"10.0.0.999"}}`,
		"record not obj": `{"a":"10.0.0.1"}`,
	} {
		t.Run(name, func(t *testing.T) {
			s, path := newStore(t)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := datastore.Read(path); !errors.Is(err, datastore.ErrCorrupt) {
				t.Fatalf("Read: %v, want ErrCorrupt", err)
			}
			if _, err := s.Add(context.Background(), record("c", "10.0.0.3")); !errors.Is(err, datastore.ErrCorrupt) {
				t.Fatalf("Add: %v, want ErrCorrupt", err)
			}
			if after, _ := os.ReadFile(path); string(after) != content {
				t.Fatalf("a failed write changed the file to %q", after)
			}
			if v, _ := datastore.Version(path); v != datastore.Unwritten {
				t.Fatalf("a failed write bumped the version to %d", v)
			}
		})
	}
}

func TestCorruptVersionFile(t *testing.T) {
	s, path := newStore(t)
	if _, err := s.Add(context.Background(), record("a", "10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+datastore.VersionSuffix, []byte("x1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := datastore.Version(path); !errors.Is(err, datastore.ErrCorrupt) {
		t.Fatalf("Version: %v, want ErrCorrupt", err)
	}
}

func TestLockFileIsNeverReplaced(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	if _, err := s.Add(ctx, record("a", "10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path + datastore.LockSuffix)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := s.Add(ctx, record(strconv.Itoa(i), fmt.Sprintf("10.0.0.%d", i+2))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Remove(ctx, strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	after, err := os.Stat(path + datastore.LockSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("the lock file was replaced")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"container-metadata.json", "container-metadata.json_lock", "container-metadata.json_version"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("directory holds %v, want %v", names, want)
	}
}

func TestRetain(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	for i, h := range []string{"a", "b", "c"} {
		if _, err := s.Add(ctx, record(h, fmt.Sprintf("10.0.0.%d", i+1))); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := s.Retain(ctx, func(handle string) bool { return handle == "b" })
	if err != nil || len(removed) != 2 {
		t.Fatalf("Retain = %v, %v", removed, err)
	}
	got, _ := datastore.Read(path)
	if len(got) != 1 || got["b"].Handle != "b" {
		t.Fatalf("left %v", got)
	}
}

func TestOwnerAndGroup(t *testing.T) {
	testenv.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "store.json")
	s, err := datastore.New(path, datastore.Options{Owner: "65534", Group: "65533"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(context.Background(), record("a", "10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + datastore.VersionSuffix, path + datastore.LockSuffix} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 65534 || st.Gid != 65533 {
			t.Errorf("%s owned by %d:%d, want 65534:65533", p, st.Uid, st.Gid)
		}
	}
	if _, err := datastore.New(path, datastore.Options{Owner: "no-such-user-here"}); err == nil {
		t.Fatal("an unknown owner was accepted")
	}
}

// The release names the owner and group (vcap); names resolve to the same IDs.
func TestOwnerAndGroupByName(t *testing.T) {
	testenv.RequireRoot(t)
	u, uerr := user.LookupId("65534")
	g, gerr := user.LookupGroupId("65534")
	if uerr != nil || gerr != nil {
		testenv.Unavailable(t, fmt.Sprintf("needs a user and a group with ID 65534 (%v, %v)", uerr, gerr))
	}
	path := filepath.Join(t.TempDir(), "store.json")
	s, err := datastore.New(path, datastore.Options{Owner: u.Username, Group: g.Name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(context.Background(), record("a", "10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + datastore.VersionSuffix, path + datastore.LockSuffix} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owned by %d:%d, want %s:%s (65534:65534)", p, st.Uid, st.Gid, u.Username, g.Name)
		}
	}
}

// Writers in many goroutines, each with its own Store as separate processes would
// have, lose nothing, and a reader polling all the while never sees a partial file.
func TestConcurrentWritersAndReader(t *testing.T) {
	ctx := context.Background()
	_, path := newStore(t)
	const writers = 50

	stop := make(chan struct{})
	readerErr := make(chan error, 1)
	go func() {
		defer close(readerErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := datastore.Read(path); err != nil {
				readerErr <- err
				return
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			s, err := datastore.New(path, datastore.Options{})
			if err == nil {
				_, err = s.Add(ctx, record(fmt.Sprintf("c%d", i), fmt.Sprintf("10.1.0.%d", i+1)))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-readerErr; err != nil {
		t.Fatalf("reader: %v", err)
	}
	got, v, err := datastore.Snapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers || v != datastore.Unwritten+writers {
		t.Fatalf("%d records, version %d; want %d and %d", len(got), v, writers, datastore.Unwritten+writers)
	}
}

// killWriterEnv makes the test binary act as a writer process: it adds records one after
// another and prints each handle once Add returned.
const killWriterEnv = "DATASTORE_TEST_KILL_WRITER"

// readerEnv makes the test binary read the datastore at its value and print the
// number of records (TestReaderWithoutAccessToTheLock runs it as another user).
const readerEnv = "DATASTORE_TEST_READER"

func TestMain(m *testing.M) {
	if path := os.Getenv(killWriterEnv); path != "" {
		os.Exit(runWriter(path))
	}
	if path := os.Getenv(readerEnv); path != "" {
		records, _, err := datastore.Snapshot(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(len(records))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runWriter(path string) int {
	s, err := datastore.New(path, datastore.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		h := fmt.Sprintf("w%d-%d", os.Getpid(), i)
		// Addresses distinct per writer process and write, as the runtime's would be.
		pid := os.Getpid()
		ip := fmt.Sprintf("fd00::%x:%x:%x", pid>>16, pid&0xffff, i&0xffff)
		if _, err := s.Add(context.Background(), record(h, ip)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintln(out, h)
		out.Flush()
	}
}

// Writer processes killed with SIGKILL at arbitrary points leave a datastore that reads
// fine and holds every record whose Add returned.
func TestWriterKilledMidStream(t *testing.T) {
	_, path := newStore(t)
	completed := map[string]bool{}
	for round := range 6 {
		var procs []*exec.Cmd
		var scanners []*bufio.Scanner
		for range 2 {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), killWriterEnv+"="+path)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			procs = append(procs, cmd)
			scanners = append(scanners, bufio.NewScanner(stdout))
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		// Each writer signals its first few completed writes; only then is it killed
		// (after a further delay that varies by round), so a slow machine cannot make
		// the test kill writers that never wrote.
		going := make(chan struct{}, 2*3)
		for _, sc := range scanners {
			wg.Go(func() {
				for n := 0; sc.Scan(); n++ {
					mu.Lock()
					completed[sc.Text()] = true
					mu.Unlock()
					if n < 3 {
						going <- struct{}{}
					}
				}
			})
		}
		for range cap(going) {
			select {
			case <-going:
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: the writers completed no writes in 30 s", round)
			}
		}
		time.Sleep(time.Duration(7+37*round) * time.Millisecond)
		for _, p := range procs {
			if err := p.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		for _, p := range procs {
			_ = p.Wait()
		}
		got, err := datastore.Read(path)
		if err != nil {
			t.Fatalf("round %d: datastore unreadable after SIGKILL: %v", round, err)
		}
		for h := range completed {
			if _, ok := got[h]; !ok {
				t.Fatalf("round %d: completed write %s is missing", round, h)
			}
		}
	}
	if len(completed) < 20 {
		t.Fatalf("only %d writes completed; the writers did not get going", len(completed))
	}
	t.Logf("%d completed writes survived 12 SIGKILLs", len(completed))
}
