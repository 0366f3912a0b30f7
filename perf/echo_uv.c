// SPDX-License-Identifier: MIT
// echo_uv: the libuv echo server of perf/run_net. The usual libuv echo:
//
//   echo_uv [--port P]        (listens on 127.0.0.1:P, default 8007; prints "listening")
//
//   - one uv_tcp_t per connection (TCP_NODELAY), uv_read_start with an alloc callback that
//     mallocs libuv's suggested size (64 KiB);
//   - each read is echoed with uv_write, whose request owns the buffer and frees it when the
//     write completes (uv_write tries the write at once when nothing is queued, so a small echo
//     is one send from inside the read callback);
//   - backpressure: while more than 1 MiB of echo is queued the connection stops reading, and
//     resumes when the queue is empty (matters only in the bulk test);
//   - EOF or an error closes the handle;
//   - SIGPIPE is ignored (libuv writes with plain write(), so a peer that is gone would
//     otherwise kill the process; every libuv server does this).
//
// SIGTERM/SIGINT end it (default action).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define QUEUE_LIMIT (1024 * 1024)

struct echo_write {
  uv_write_t req;
  uv_buf_t buf;
};

static uv_loop_t* loop;

static void on_close(uv_handle_t* h) {
  free(h);
}

static void close_conn(uv_stream_t* s) {
  if (!uv_is_closing((uv_handle_t*)s)) uv_close((uv_handle_t*)s, on_close);
}

static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

static void on_write(uv_write_t* req, int status) {
  struct echo_write* w = (struct echo_write*)req;
  uv_stream_t* s = req->handle;
  free(w->buf.base);
  free(w);
  if (status < 0) {
    close_conn(s);
    return;
  }
  // Reading was paused for backpressure: resume once everything queued is written.
  if (s->data && uv_stream_get_write_queue_size(s) == 0 && !uv_is_closing((uv_handle_t*)s)) {
    s->data = NULL;
    uv_read_start(s, on_alloc, on_read);
  }
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  if (n <= 0) {
    free(buf->base);
    if (n < 0) close_conn(s);  // UV_EOF or an error; 0 is "nothing read" (EAGAIN)
    return;
  }
  struct echo_write* w = malloc(sizeof *w);
  if (!w) {
    free(buf->base);
    close_conn(s);
    return;
  }
  w->buf = uv_buf_init(buf->base, (unsigned)n);
  if (uv_write(&w->req, s, &w->buf, 1, on_write) != 0) {
    free(buf->base);
    free(w);
    close_conn(s);
    return;
  }
  if (uv_stream_get_write_queue_size(s) > QUEUE_LIMIT) {
    s->data = s;  // marks "paused"
    uv_read_stop(s);
  }
}

static void on_connection(uv_stream_t* server, int status) {
  if (status < 0) {
    fprintf(stderr, "echo_uv: connection error: %s\n", uv_strerror(status));
    return;
  }
  uv_tcp_t* c = malloc(sizeof *c);
  if (!c) return;
  uv_tcp_init(loop, c);
  c->data = NULL;
  if (uv_accept(server, (uv_stream_t*)c) != 0) {
    uv_close((uv_handle_t*)c, on_close);
    return;
  }
  uv_tcp_nodelay(c, 1);
  uv_read_start((uv_stream_t*)c, on_alloc, on_read);
}

int main(int argc, char** argv) {
  int port = 8007;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: echo_uv [--port P]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  int r = uv_tcp_bind(&server, (const struct sockaddr*)&addr, 0);
  if (r == 0) r = uv_listen((uv_stream_t*)&server, 1024, on_connection);
  if (r != 0) {
    fprintf(stderr, "echo_uv: listen: %s\n", uv_strerror(r));
    return 1;
  }
  printf("echo_uv listening on 127.0.0.1:%d (libuv %s)\n", port, uv_version_string());
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
