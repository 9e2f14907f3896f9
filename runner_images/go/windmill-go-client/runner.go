package windmill

// The runner half of this module, called by the main package kubemill generates for a script
// (runner_images/go/builder): decode args.json into main's parameter types, call it, write the envelope.
// Contract: docs/runners.md. Not part of Windmill's client API.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

const (
	resultPrefix = "KUBEMILL_RESULT:"
	summaryLimit = 4096    // bytes Kubernetes keeps of a termination message
	logLimit     = 1 << 20 // envelopes up to this size are also the last line of stdout
)

// Failure is Windmill's error shape.
type Failure struct {
	Name    string  `json:"name"`
	Message string  `json:"message"`
	Stack   *string `json:"stack"`
}

type envelope struct {
	Result interface{} `json:"result"`
	Error  *Failure    `json:"error"`
	State  interface{} `json:"state"`
}

func marshal(value interface{}) ([]byte, error) {
	var buf bytes.Buffer
	encoder := json.NewEncoder(&buf)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(value); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func write(path string, data []byte) {
	// Not writable (no termination log outside Kubernetes, a read-only state file): the other outputs still
	// carry the envelope.
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	_ = os.WriteFile(path, data, 0o644)
}

func cut(text string, limit int, tail bool) string {
	if len(text) <= limit {
		return text
	}
	if tail {
		return text[len(text)-limit:]
	}
	return text[:limit]
}

// maskForms reads the forms of the run's secret values (the operator lists them, longest first).
func maskForms() []string {
	path := os.Getenv("KUBEMILL_MASKS_FILE")
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var forms []string
	if json.Unmarshal(data, &forms) != nil {
		return nil
	}
	return forms
}

// mask replaces every form by "***" in a plain JSON value, keys included.
func mask(value interface{}, forms []string) interface{} {
	switch v := value.(type) {
	case string:
		for _, form := range forms {
			if form != "" {
				v = strings.ReplaceAll(v, form, "***")
			}
		}
		return v
	case []interface{}:
		out := make([]interface{}, len(v))
		for i, item := range v {
			out[i] = mask(item, forms)
		}
		return out
	case map[string]interface{}:
		out := make(map[string]interface{}, len(v))
		for key, item := range v {
			out[mask(key, forms).(string)] = mask(item, forms)
		}
		return out
	}
	return value
}

// maskedStream pipes a file descriptor (1 or 2) through a goroutine that masks each line before it reaches
// the container's log: what the script prints, and what its subprocesses print, never shows a secret.
type maskedStream struct {
	fd, saved int
	writer    *os.File
	done      chan struct{}
}

var maskedStreams []*maskedStream

func maskOutput(forms []string) {
	for _, fd := range []int{1, 2} {
		saved, err := syscall.Dup(fd)
		if err != nil {
			continue
		}
		reader, writer, err := os.Pipe()
		if err != nil {
			continue
		}
		if syscall.Dup3(int(writer.Fd()), fd, 0) != nil {
			continue
		}
		stream := &maskedStream{fd: fd, saved: saved, writer: writer, done: make(chan struct{})}
		go func() {
			defer close(stream.done)
			out := os.NewFile(uintptr(saved), "log")
			lines := bufio.NewReader(reader)
			for {
				line, err := lines.ReadString('\n')
				if line != "" {
					_, _ = out.WriteString(mask(line, forms).(string))
				}
				if err != nil {
					return
				}
			}
		}()
		maskedStreams = append(maskedStreams, stream)
	}
}

// unmaskOutput gives the log its descriptors back once everything the script printed is through.
func unmaskOutput() {
	_ = os.Stdout.Sync()
	_ = os.Stderr.Sync()
	for _, stream := range maskedStreams {
		_ = syscall.Dup3(stream.saved, stream.fd, 0) // the pipe's writers are gone: the goroutine reads EOF
		_ = stream.writer.Close()
		select { // a background process the script left may hold the pipe: do not wait for it for ever
		case <-stream.done:
		case <-time.After(10 * time.Second):
		}
	}
	maskedStreams = nil
}

// finish writes the envelope (result file, termination summary, last log line, state) and exits.
func finish(result interface{}, failure *Failure) {
	loadState()
	env := envelope{Result: result, Error: failure, State: state.value}
	text, err := marshal(env)
	if err != nil {
		message := fmt.Sprintf("main returned a value that is not JSON-serialisable: %v", err)
		env = envelope{Error: &Failure{Name: "ResultNotSerializable", Message: message}, State: state.value}
		if text, err = marshal(env); err != nil {
			env.State = nil
			text, _ = marshal(env)
		}
	}
	if forms := maskForms(); len(forms) > 0 {
		// what viewers can read (termination message, log line) never holds a secret
		var plain interface{}
		decoder := json.NewDecoder(bytes.NewReader(text))
		decoder.UseNumber() // integers beyond 2^53 stay exact
		if decoder.Decode(&plain) == nil {
			if masked, err := marshal(mask(plain, forms)); err == nil {
				text = masked
				env = envelope{}
				_ = json.Unmarshal(text, &env)
			}
		}
	}
	if state.changed && env.State != nil {
		if data, err := marshal(env.State); err == nil {
			write(setting("KUBEMILL_STATE_FILE", runRoot+"/state/state.json"), data)
		}
	}
	write(setting("KUBEMILL_RESULT_FILE", runRoot+"/out/result.json"), text)
	summary := text
	if len(text) > summaryLimit {
		var short *Failure
		if e := env.Error; e != nil {
			stack := ""
			if e.Stack != nil {
				stack = cut(*e.Stack, 1500, true)
			}
			short = &Failure{Name: cut(e.Name, 200, false), Message: cut(e.Message, 1500, false), Stack: &stack}
		}
		summary, _ = marshal(map[string]interface{}{
			"result": nil, "error": short, "state": nil, "truncated": true, "bytes": len(text),
		})
	}
	write(setting("KUBEMILL_TERMINATION_LOG", "/dev/termination-log"), summary)
	unmaskOutput()
	if setting("KUBEMILL_LOG_RESULT", "1") != "0" && len(text) <= logLimit {
		os.Stdout.Write(append(append([]byte("\n"+resultPrefix), text...), '\n'))
	}
	if env.Error != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// KubemillFail ends the run with an error envelope (the builder's compile and dependency errors).
func KubemillFail(name, message, stack string) {
	var s *string
	if stack != "" {
		s = &stack
	}
	finish(nil, &Failure{Name: name, Message: message, Stack: s})
}

var errorType = reflect.TypeOf((*error)(nil)).Elem()

// errorName is an error's Go type name (`ValidationError`), or `Error` for the standard library's own.
func errorName(err error) string {
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.PkgPath() {
	case "", "errors", "fmt":
		return "Error"
	}
	return t.Name()
}

// KubemillRun calls `fn` (the script's main) with the args named `params`, each JSON value decoded into its
// parameter's Go type (absent or null: the zero value), and finishes the run with its result or error.
func KubemillRun(fn interface{}, params []string) {
	if forms := maskForms(); len(forms) > 0 {
		maskOutput(forms)
	}
	value := reflect.ValueOf(fn)
	kind := value.Type()
	args := map[string]json.RawMessage{}
	data, err := os.ReadFile(setting("KUBEMILL_ARGS_FILE", runRoot+"/args.json"))
	if err == nil {
		err = json.Unmarshal(data, &args)
	}
	if err != nil {
		KubemillFail("InvalidArgs", fmt.Sprintf("args.json is not a JSON object: %v", err), "")
	}
	in := make([]reflect.Value, kind.NumIn())
	for i := range in {
		target := reflect.New(kind.In(i))
		if raw, ok := args[params[i]]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, target.Interface()); err != nil {
				KubemillFail("InvalidArgs", fmt.Sprintf("argument %s: %v", params[i], err), "")
			}
		}
		in[i] = target.Elem()
	}
	defer func() {
		if panicked := recover(); panicked != nil {
			stack := string(debug.Stack())
			finish(nil, &Failure{Name: "Panic", Message: fmt.Sprint(panicked), Stack: &stack})
		}
	}()
	var result interface{}
	for _, out := range value.Call(in) {
		if out.Type() == errorType || (out.Type().Implements(errorType) && out.Kind() == reflect.Interface) {
			if !out.IsNil() {
				err := out.Interface().(error)
				finish(nil, &Failure{Name: errorName(err), Message: err.Error()})
			}
			continue
		}
		result = out.Interface()
	}
	finish(result, nil)
}
