/* Process log for the SSH exec corpus (test/ssh-exec-corpus.test.ts): loaded into every program the
 * target's sshd starts (sshd_config `SetEnv LD_PRELOAD=…`), it appends one record per program image
 * to $GH_EXECLOG when the program starts: pid, the executable, then argv, fields separated by 0x1f,
 * records ended by 0x1e, in one write on an O_APPEND descriptor. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void gatehouse_exec_log(void) {
  const char *path = getenv("GH_EXECLOG");
  if (path == NULL) return;
  static char args[65536], exe[4096], rec[70000];
  int fd = open("/proc/self/cmdline", O_RDONLY);
  if (fd < 0) return;
  ssize_t n = 0, r;
  while (n < (ssize_t)sizeof args - 1 && (r = read(fd, args + n, sizeof args - 1 - n)) > 0) n += r;
  close(fd);
  for (ssize_t i = 0; i < n; i++) if (args[i] == '\0') args[i] = '\x1f';
  if (n > 0 && args[n - 1] == '\x1f') n--;
  ssize_t m = readlink("/proc/self/exe", exe, sizeof exe - 1);
  exe[m < 0 ? 0 : m] = '\0';
  int len = snprintf(rec, sizeof rec, "%d\x1f%s\x1f%.*s\x1e", (int)getpid(), exe, (int)n, args);
  if (len <= 0) return;
  if (len > (int)sizeof rec) len = sizeof rec;
  int out = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (out < 0) return;
  ssize_t w = write(out, rec, len);
  (void)w;
  close(out);
}
