// Command health judges a Kubernetes object the way GitOps tools do: with an Argo CD health
// check written in Lua (run by gopher-lua, the interpreter Argo CD embeds) and with kstatus
// (sigs.k8s.io/cli-utils, what Flux uses). It reads the object as JSON on stdin and prints
// {"lua": {"status", "message"}, "kstatus": {"status", "message"}}.
//
//	health --lua charts/outbound/files/argocd/outbound.dev_OutboundDelivery.lua < object.json
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	script := flag.String("lua", "", "Argo CD health check (Lua) to run on the object")
	flag.Parse()
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading the object: %v", err)
	}
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var decoded interface{}
	if err := decoder.Decode(&decoded); err != nil {
		fail("the object is not JSON: %v", err)
	}
	object, ok := numbers(decoded).(map[string]interface{})
	if !ok {
		fail("the object is not a JSON object")
	}
	out := map[string]verdict{}
	if *script != "" {
		v, err := runLua(*script, object)
		if err != nil {
			fail("lua: %v", err)
		}
		out["lua"] = v
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: object})
	if err != nil {
		fail("kstatus: %v", err)
	}
	out["kstatus"] = verdict{Status: res.Status.String(), Message: res.Message}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}

// runLua runs a health check as Argo CD does: the object as the global `obj`, the script's
// returned table as the verdict.
func runLua(path string, object map[string]interface{}) (verdict, error) {
	source, err := os.ReadFile(path)
	if err != nil {
		return verdict{}, err
	}
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, object))
	if err := L.DoString(string(source)); err != nil {
		return verdict{}, err
	}
	table, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return verdict{}, fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	return verdict{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}, nil
}

// numbers turns JSON numbers into int64 where whole (as the API machinery keeps them) and
// float64 otherwise.
func numbers(v interface{}) interface{} {
	switch v := v.(type) {
	case map[string]interface{}:
		for k, e := range v {
			v[k] = numbers(e)
		}
		return v
	case []interface{}:
		for i, e := range v {
			v[i] = numbers(e)
		}
		return v
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	default:
		return v
	}
}

// toLua converts decoded JSON into Lua values (objects and arrays become tables, arrays from 1).
func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case map[string]interface{}:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []interface{}:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "health: "+format+"\n", args...)
	os.Exit(1)
}
