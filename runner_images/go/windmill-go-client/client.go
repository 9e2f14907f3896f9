// Package windmill is kubemill's stand-in for github.com/windmill-labs/windmill-go-client: the same calls,
// backed by the files of the runner contract (docs/runners.md) instead of Windmill's HTTP API, so Windmill Go
// scripts run unchanged. The generated go.mod of every script maps the module path here with a `replace`.
//
// Resources and variables are files named `resource.<path>` / `variable.<path>` (each `/` of the path written
// as `.`) under $KUBEMILL_RESOURCES_DIR; a resource's `$var:<path>` and `$res:<path>` strings are replaced by
// their values. State travels in the result envelope (runner.go).
package windmill

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const runRoot = "/var/run/kubemill"

func setting(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

// NotFoundError is a resource or variable the run was not given.
type NotFoundError struct{ Kind, Path string }

func (e *NotFoundError) Error() string {
	title := strings.ToUpper(e.Kind[:1]) + e.Kind[1:]
	return fmt.Sprintf("%s '%s' is not available to this run: list it in the Script's spec.resources and create "+
		"a %s with spec.path '%s' in the namespace (for `kubemill run`, a %s.%s.yaml file in the workspace)",
		e.Kind, e.Path, title, e.Path, e.Path, e.Kind)
}

// NotSupportedError is a call that would change the workspace: under kubemill those things are manifests.
type NotSupportedError struct{ Call string }

func (e *NotSupportedError) Error() string {
	return e.Call + " is not available under kubemill: resources, variables and schedules are declared as " +
		"manifests in git (Resource, Variable, Schedule); change them there"
}

func read(kind, path string) ([]byte, error) {
	name := kind + "." + strings.ReplaceAll(strings.Trim(path, "/"), "/", ".")
	data, err := os.ReadFile(filepath.Join(setting("KUBEMILL_RESOURCES_DIR", runRoot+"/resources"), name))
	if err != nil {
		return nil, &NotFoundError{kind, path}
	}
	return data, nil
}

func interpolate(value interface{}) (interface{}, error) {
	switch v := value.(type) {
	case string:
		if strings.HasPrefix(v, "$var:") {
			return GetVariable(v[5:])
		}
		if strings.HasPrefix(v, "$res:") {
			return GetResource(v[5:])
		}
	case []interface{}:
		for i, item := range v {
			done, err := interpolate(item)
			if err != nil {
				return nil, err
			}
			v[i] = done
		}
	case map[string]interface{}:
		for key, item := range v {
			done, err := interpolate(item)
			if err != nil {
				return nil, err
			}
			v[key] = done
		}
	}
	return value, nil
}

// GetResource is the resource's value, an object (`resource["api_key"].(string)`).
func GetResource(path string) (map[string]interface{}, error) {
	data, err := read("resource", path)
	if err != nil {
		return nil, err
	}
	var value map[string]interface{}
	if err := json.Unmarshal(data, &value); err != nil {
		return nil, fmt.Errorf("resource '%s' is not a JSON object: %w", path, err)
	}
	if _, err := interpolate(value); err != nil {
		return nil, err
	}
	return value, nil
}

// GetVariable is the variable's text.
func GetVariable(path string) (string, error) {
	data, err := read("variable", path)
	if err != nil {
		return "", err
	}
	return string(data), nil
}

// SetResource is not supported: Resources are manifests.
func SetResource(path string, value interface{}, resourceTypeOpt ...string) error {
	return &NotSupportedError{"SetResource"}
}

// SetVariable is not supported: Variables are manifests.
func SetVariable(path string, value string) error {
	return &NotSupportedError{"SetVariable"}
}

// GetStatePath is where Windmill keeps this script's state ($WM_STATE_PATH).
func GetStatePath() string {
	return os.Getenv("WM_STATE_PATH")
}

var state struct {
	loaded, changed bool
	value           interface{}
}

func loadState() {
	if state.loaded {
		return
	}
	state.loaded = true
	data, err := os.ReadFile(setting("KUBEMILL_STATE_FILE", runRoot+"/state/state.json"))
	if err == nil {
		_ = json.Unmarshal(data, &state.value)
	}
}

// GetState is the state the previous run of this script left (nil if none).
func GetState() (interface{}, error) {
	loadState()
	return state.value, nil
}

// SetState replaces the state the next run will see.
func SetState(value interface{}) error {
	loadState()
	state.value, state.changed = value, true
	return nil
}

// GetWorkspace is the run's workspace (its namespace).
func GetWorkspace() string {
	return os.Getenv("WM_WORKSPACE")
}

// SetProgress reports a percentage on stderr, where kubemill picks it up.
func SetProgress(percent int) error {
	fmt.Fprintf(os.Stderr, "KUBEMILL_PROGRESS: %d\n", percent)
	return nil
}

// ResumeUrls are the links that approve or cancel the approval step after this one.
type ResumeUrls struct {
	ApprovalPage string `json:"approvalPage"`
	Cancel       string `json:"cancel"`
	Resume       string `json:"resume"`
}

// GetResumeUrls are the signed links deciding the approval step after this one: for `approver` (one the
// step lists), or anonymous ones when it is empty (they decide only a step that lists no approvers).
func GetResumeUrls(approver string) (ResumeUrls, error) {
	var doc struct {
		ResumeUrls
		Approvers map[string]ResumeUrls `json:"approvers"`
	}
	data, err := os.ReadFile(setting("KUBEMILL_RESUME_URLS_FILE", runRoot+"/resume-urls.json"))
	if err != nil {
		return doc.ResumeUrls, fmt.Errorf("resume URLs exist only for a flow step followed by an approval step; this run has none")
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return doc.ResumeUrls, err
	}
	if approver == "" {
		return doc.ResumeUrls, nil
	}
	urls, ok := doc.Approvers[approver]
	if !ok {
		return urls, fmt.Errorf("no resume URLs for approver %q: the step's approvers are not that name", approver)
	}
	return urls, nil
}
