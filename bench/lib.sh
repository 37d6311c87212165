# Shell helpers shared by the benchmark runners (bench/run.sh,
# bench/push/run.sh); sourced. They expect an array PIDS of the processes
# the runner started.

stop_pid() {   # stop_pid PID: SIGTERM, then SIGKILL after 10 s
  local p=$1 i keep=() q
  for q in "${PIDS[@]:-}"; do [ "$q" != "$p" ] && keep+=("$q"); done
  PIDS=("${keep[@]:-}")
  kill "$p" 2>/dev/null || return 0
  for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

free_port() {
  lua5.4 -e 'local s=require"socket".bind("127.0.0.1",0); local _,p=s:getsockname(); print(p); s:close()'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
http_get() {   # http_get PORT PATH -> body
  (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3 &&
   tr -d '\r' <&3 | sed '1,/^$/d') 2>/dev/null || true
}
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
