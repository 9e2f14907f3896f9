#!/usr/bin/env bash
# kubemill's Bash runner: runs the script with the run's args as positional parameters and writes the result
# envelope. The contract (paths, envelope, exit codes) is in docs/runners.md; it needs bash, jq and coreutils.
#
# Args: the script reads them as Windmill does (`name="$1"`, `x="${2:-default}"`); the wrapper finds those
# assignments and passes args.json's values in that order (non-strings as JSON text, missing ones empty).
# Result: ./result.json if the script wrote one, else its last line of stdout (JSON if it parses, else the
# string); a JSON document printed over several lines at the very end (a heredoc) counts as one last line.
# Resources, variables, state, progress: files under $KUBEMILL_RESOURCES_DIR and $KUBEMILL_STATE_FILE, and the
# exported functions wmill_get_resource, wmill_get_variable, wmill_get_state, wmill_set_state,
# wmill_set_progress, wmill_get_workspace, wmill_get_resume_urls, wmill_whoami.
set -uo pipefail

readonly ROOT=/var/run/kubemill PREFIX=KUBEMILL_RESULT: SUMMARY_LIMIT=4096 LOG_LIMIT=1048576
code_file="${KUBEMILL_CODE_DIR:-$ROOT/code}/main.sh"
args_file="${KUBEMILL_ARGS_FILE:-$ROOT/args.json}"
state_file="${KUBEMILL_STATE_FILE:-$ROOT/state/state.json}"
result_file="${KUBEMILL_RESULT_FILE:-$ROOT/out/result.json}"
termination_log="${KUBEMILL_TERMINATION_LOG:-/dev/termination-log}"
export KUBEMILL_RESOURCES_DIR="${KUBEMILL_RESOURCES_DIR:-$ROOT/resources}"

work=$(mktemp -d "${TMPDIR:-/tmp}/kubemill-run.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

wmill_get_resource() {
  local file="$KUBEMILL_RESOURCES_DIR/resource.${1//\//.}" vars=() v
  if [[ ! -f $file ]]; then
    echo "kubemill: resource '$1' is not available to this run: list it in the Script's spec.resources" >&2
    return 1
  fi
  for v in "$KUBEMILL_RESOURCES_DIR"/variable.*; do
    [[ -f $v ]] && vars+=(--rawfile "${v##*/}" "$v")
  done
  jq -c "${vars[@]}" 'walk(if type == "string" and startswith("$var:")
    then ($ARGS.named["variable." + (.[5:] | gsub("/"; "."))] // error("variable \(.[5:]) is not available"))
    else . end)' "$file"
}
wmill_get_variable() {
  local file="$KUBEMILL_RESOURCES_DIR/variable.${1//\//.}"
  if [[ ! -f $file ]]; then
    echo "kubemill: variable '$1' is not available to this run: list it in the Script's spec.resources" >&2
    return 1
  fi
  cat "$file"
}
wmill_get_state() { if [[ -s $KUBEMILL_STATE_FILE ]]; then cat "$KUBEMILL_STATE_FILE"; else echo null; fi; }
wmill_set_state() { printf '%s\n' "$1" >"$KUBEMILL_STATE_FILE"; }
wmill_set_progress() { echo "KUBEMILL_PROGRESS: $1" >&2; }
wmill_get_workspace() { echo "${WM_WORKSPACE:-}"; }
wmill_whoami() { jq -cn '{email: env.WM_EMAIL, username: env.WM_USERNAME, workspace_id: env.WM_WORKSPACE}'; }
wmill_get_resume_urls() { # [approver]
  local file=${KUBEMILL_RESUME_URLS_FILE:-$ROOT/resume-urls.json}
  if [[ -s $file ]]; then
    if [[ -n ${1:-} ]]; then
      jq -ce --arg a "$1" '.approvers[$a] // error("no resume URLs for approver \($a)")' "$file"
    else
      jq -c '{approvalPage, resume, cancel}' "$file"
    fi
    return
  fi
  echo "kubemill: resume URLs exist only for a flow step followed by an approval step" >&2
  return 1
}
# Windmill's resource and variable endpoints under $BASE_INTERNAL_URL (scripts that call them with curl and
# $WM_TOKEN, like the brief's deploy_service.sh), answered from this run's files; other URLs go to curl.
curl() {
  local arg url= rest path
  for arg; do [[ $arg == "${BASE_INTERNAL_URL:-}"/api/w/*/* ]] && url=$arg; done
  if [[ -z $url ]]; then command curl "$@"; return; fi
  rest=${url#"${BASE_INTERNAL_URL:-}"/api/w/*/} rest=${rest%%\?*}
  case $rest in
    resources/get/*) path=${rest#resources/get/}
      wmill_get_resource "$path" | jq -c --arg p "$path" '{path: $p, value: .}' ;;
    resources/get_value/* | resources/get_value_interpolated/*) wmill_get_resource "${rest#resources/*/}" ;;
    variables/get/*) path=${rest#variables/get/}
      wmill_get_variable "$path" | jq -c -R -s --arg p "$path" '{path: $p, value: ., is_secret: true}' ;;
    variables/get_value/*) wmill_get_variable "${rest#variables/get_value/}" | jq -c -R -s . ;;
    *) echo "kubemill: $url is not served to scripts (resources/get, resources/get_value, variables/get and" \
      "variables/get_value are)" >&2; return 22 ;;
  esac
}
export -f wmill_get_resource wmill_get_variable wmill_get_state wmill_set_state wmill_set_progress \
  wmill_get_workspace wmill_whoami wmill_get_resume_urls curl
export WM_TOKEN="${WM_TOKEN:-kubemill}" # scripts send it to the endpoints above, which do not check it

# JSON helpers in plain bash: jq costs ~20 ms a call, so it is used only where bash cannot decide.
json_string() { # $1 as a JSON string, into REPLY
  local s=$1
  if ((${#s} > 4096)) || [[ $s == *[$'\x01'-$'\x08\x0b\x0c\x0e'-$'\x1f']* ]]; then
    REPLY=$(printf '%s' "$s" | jq -c -R -s .)
    return
  fi
  s=${s//\\/\\\\} s=${s//\"/\\\"} s=${s//$'\n'/\\n} s=${s//$'\r'/\\r} s=${s//$'\t'/\\t}
  REPLY="\"$s\""
}
as_json() { # a file's text as one JSON value, into REPLY: itself if it parses as exactly one, else a string
  REPLY=$(jq -c -s 'if length == 1 then .[0] else error("") end' "$1" 2>/dev/null) \
    || REPLY=$(jq -c -R -s 'rtrimstr("\n")' "$1")
}
declare -A ARG=()
flat_args() { # args.json when it is a flat object of scalars without escapes (the usual case), into ARG
  local t=$1 key
  [[ ${#t} -lt 65536 && $t =~ ^[[:space:]]*\{(.*)\}[[:space:]]*$ && $t != *\\* ]] || return 1
  t=${BASH_REMATCH[1]}
  while [[ $t =~ ^[[:space:]]*\"([^\"]*)\"[[:space:]]*:[[:space:]]* ]]; do
    key=${BASH_REMATCH[1]} t=${t:${#BASH_REMATCH[0]}}
    if [[ $t =~ ^\"([^\"]*)\" ]]; then
      ARG[$key]=${BASH_REMATCH[1]}
    elif [[ $t =~ ^(-?[0-9][0-9.eE+-]*|true|false) ]]; then
      ARG[$key]=${BASH_REMATCH[1]}
    elif [[ $t =~ ^null ]]; then
      ARG[$key]=
    else
      return 1
    fi
    t=${t:${#BASH_REMATCH[0]}}
    [[ $t =~ ^[[:space:]]*,? ]] && t=${t:${#BASH_REMATCH[0]}}
  done
  [[ $t =~ ^[[:space:]]*$ ]]
}

# Positional parameter names in the order the script reads them.
names=()
while IFS= read -r line || [[ -n $line ]]; do
  if [[ $line =~ ^[[:space:]]*(local[[:space:]]+|export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=\"?\$\{?([1-9][0-9]*) ]]; then
    names[BASH_REMATCH[3] - 1]=${BASH_REMATCH[2]}
  fi
done <"$code_file" 2>/dev/null
argv=() flat=0
[[ -s $args_file ]] && flat_args "$(<"$args_file")" && flat=1
if ((${#names[@]})) && [[ -s $args_file ]]; then
  ordered=() last=0
  for i in "${!names[@]}"; do last=$i; done
  for ((i = 0; i <= last; i++)); do ordered+=("${names[i]-}"); done
  if ((flat)); then
    for name in "${ordered[@]}"; do argv+=("${ARG[$name]-}"); done
  else
    quoted=$(jq -r '. as $a | $ARGS.positional
      | map(($a[.] // null) | if . == null then "" elif type == "string" then . else tojson end) | @sh' \
      "$args_file" --args "${ordered[@]}") || exit 1 # the file before --args, or jq reads stdin
    eval "argv=($quoted)"
  fi
fi

# Args the script does not read positionally are also environment variables (Windmill scripts such as the
# brief's deploy_service.sh read SERVICE_NAME... from the environment): names that are shell identifiers, and
# never in place of a variable the environment already has.
SHELL_READS="ENV SHELLOPTS POSIXLY_CORRECT PS1 PS2 PS3 PS4 PROMPT_COMMAND IFS PATH CDPATH GLOBIGNORE EXECIGNORE
FUNCNEST HOME SHELL TMPDIR HISTFILE INPUTRC LANG LANGUAGE TZ OLDPWD PWD _"
SHELL_READS=${SHELL_READS//$'\n'/ }
exports=()
if [[ -s $args_file ]]; then
  positional=" ${names[*]-} "
  if ((!flat)); then
    ARG=()
    while IFS= read -r -d '' key && IFS= read -r -d '' value; do ARG[$key]=$value; done < <(jq -j \
      'to_entries[] | .key, "\u0000", (.value | if . == null then "" elif type == "string" then . else tojson
      end), "\u0000"' "$args_file" 2>/dev/null)
  fi
  exported=" $(compgen -e | tr '\n' ' ') "
  code=$(<"$code_file")
  for key in "${!ARG[@]}"; do
    # Only a name the script reads ($NAME or ${NAME...}), never one bash, the loader or this runner reads
    # itself (the same rule as kubemill.runners.validation.env_arg_name_problem, which refuses such runs).
    [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ && $positional != *" $key "* && $exported != *" $key "* ]] || continue
    [[ $key =~ ^(BASH|LD_|LC_|GCONV_|KUBEMILL_|WM_) || " $SHELL_READS " == *" $key "* ]] && continue
    [[ $code == *"\$$key"* || $code == *"\${$key"* ]] || continue
    exports+=("$key=${ARG[$key]}")
  done
fi
run_script() { # in the pipeline's subshell, so the exports never touch this wrapper's variables
  ((${#exports[@]} == 0)) || export "${exports[@]}"
  exec bash "$code_file" "${argv[@]}"
}

# State: the script sees a writable copy; a changed copy is the new state.
before=
if [[ -f $state_file ]]; then before=$(<"$state_file"); fi
printf '%s' "$before" >"$work/state.json"
export KUBEMILL_STATE_FILE="$work/state.json"

# The run's secret values in every form (the operator lists them): what the script prints reaches the
# container's log masked, and so does the envelope.
masks_file=${KUBEMILL_MASKS_FILE:-}
[[ -n $masks_file && -s $masks_file && $(<"$masks_file") != "[]" ]] || masks_file=
mask_lines() { jq --unbuffered -R -r --slurpfile f "$masks_file" 'reduce $f[0][] as $x (.; split($x) | join("***"))'; }

cd "$work" || exit 1
if [[ -n $masks_file ]]; then
  { { run_script | mask_lines | tee "$work/stdout"; exit "${PIPESTATUS[0]}"; } 2>&1 1>&3 \
    | mask_lines | tee "$work/stderr" >&2; } 3>&1
else
  { { run_script | tee "$work/stdout"; exit "${PIPESTATUS[0]}"; } 2>&1 1>&3 \
    | tee "$work/stderr" >&2; } 3>&1
fi
status=${PIPESTATUS[0]}

number='^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$'
result=null
if ((status == 0)); then
  if [[ -f $work/result.json ]]; then
    as_json "$work/result.json"
    result=$REPLY
  elif [[ -s $work/stdout ]]; then
    last=$(tail -n 1 "$work/stdout")
    [[ ${last: -1} == $'\r' ]] && last=${last:0:${#last}-1} # not ${last%...}: quadratic on long lines
    if ((${#last} > 4096)); then # long lines: bash pattern matching is slow on them, jq is not
      printf '%s' "$last" >"$work/last"
      as_json "$work/last"
      result=$REPLY
    elif [[ $last =~ $number || $last == true || $last == false || $last == null ]]; then
      result=$last
    elif [[ $last =~ ^[[:space:]]*[\]\}][[:space:]]*$ ]]; then # a JSON document closing on the last line
      tail -n 2000 "$work/stdout" >"$work/tail"
      json_string "$last"
      result=$REPLY
      for start in $(grep -n '^[[{]' "$work/tail" | cut -d: -f1 | tail -n 5 | tac); do
        if REPLY=$(tail -n "+$start" "$work/tail" | jq -c -s 'if length == 1 then .[0] else error("") end' \
          2>/dev/null); then
          result=$REPLY
          break
        fi
      done
    elif [[ $last == [\{\[\"]* ]]; then
      printf '%s' "$last" >"$work/last"
      as_json "$work/last"
      result=$REPLY
    else
      json_string "$last"
      result=$REPLY
    fi
  fi
fi

after=$(<"$work/state.json")
state=$before
if [[ $after != "$before" ]]; then
  as_json "$work/state.json"
  state=$REPLY
fi
[[ -n ${state//[[:space:]]/} ]] || state=null

if ((status == 0)); then
  envelope="{\"result\":$result,\"error\":null,\"state\":$state}"
else
  if [[ -s $work/stderr ]]; then log="$work/stderr"; else log="$work/stdout"; fi
  stack=$(tail -n 20 "$log" | tail -c 4000)
  message="bash exited with code $status"
  [[ -n $stack ]] && message+=": ${stack##*$'\n'}"
  json_string "$message"
  message=$REPLY
  json_string "$stack"
  envelope="{\"result\":null,\"error\":{\"name\":\"ExitCode\",\"message\":$message,\"stack\":$REPLY},\"state\":$state}"
fi

if [[ -n $masks_file ]]; then
  envelope=$(printf '%s' "$envelope" | jq -c --slurpfile f "$masks_file" 'def m: if type == "string"
    then reduce $f[0][] as $x (.; split($x) | join("***")) elif type == "object"
    then with_entries(.key |= m | .value |= m) elif type == "array" then map(m) else . end; m')
fi
if [[ $after != "$before" ]]; then printf '%s\n' "$after" 2>/dev/null >"$state_file"; fi
[[ -d ${result_file%/*} ]] || mkdir -p "${result_file%/*}" 2>/dev/null
printf '%s\n' "$envelope" 2>/dev/null >"$result_file"
LC_ALL=C size=${#envelope}
if ((size <= SUMMARY_LIMIT)); then
  printf '%s' "$envelope" 2>/dev/null >"$termination_log"
else
  printf '%s' "$envelope" | jq -c --arg bytes "$size" '{result: null, state: null, truncated: true,
    bytes: ($bytes | tonumber), error: (.error | if . then {name, message: (.message[:1500]),
    stack: ((.stack // "")[-1500:])} else . end)}' 2>/dev/null >"$termination_log"
fi
if [[ ${KUBEMILL_LOG_RESULT:-1} != 0 ]] && ((size <= LOG_LIMIT)); then
  printf '\n%s%s\n' "$PREFIX" "$envelope"
fi
((status == 0))
