// Programs that run other programs: what the SSH plugin (a command line's programs) and the
// Kubernetes plugin (an exec's argv) treat as opaque to policy, because what would run is not what
// policy saw.

/** Programs that run another command, a script or code given in their arguments. */
// biome-ignore format: a word list, kept compact
export const RUNNERS = new Set([
  // privilege and context switches
  'sudo', 'doas', 'su', 'runuser', 'pkexec', 'setpriv', 'capsh', 'chroot', 'nsenter', 'unshare', 'firejail',
  'systemd-run', 'systemd-nspawn', 'machinectl', 'ip', 'sg', 'newgrp',
  // wrappers whose grammar is not modelled here
  'env', 'nohup', 'time', 'xargs', 'stdbuf', 'ionice', 'chrt', 'taskset', 'setsid', 'flock', 'watch',
  'parallel', 'strace', 'ltrace', 'gdb', 'valgrind', 'perf', 'script', 'expect', 'busybox', 'toybox', 'at',
  'batch', 'crontab', 'numactl', 'catchsegv', 'faketime', 'fakeroot', 'proot', 'torsocks', 'proxychains',
  // shells
  'sh', 'bash', 'dash', 'zsh', 'ksh', 'ksh93', 'mksh', 'pdksh', 'rbash', 'ash', 'yash', 'posh', 'fish', 'csh',
  'tcsh', 'elvish', 'nu', 'xonsh', 'screen', 'tmux',
  // interpreters and programs with a command language
  'awk', 'gawk', 'mawk', 'nawk', 'busybox-awk', 'sed', 'gsed', 'perl', 'python', 'ruby', 'node', 'nodejs',
  'deno', 'bun', 'php', 'lua', 'luajit', 'tclsh', 'wish', 'Rscript', 'R', 'julia', 'guile', 'racket', 'ghci',
  'runghc', 'scala', 'groovy', 'jshell', 'osascript', 'bc', 'dc', 'gnuplot', 'octave', 'sqlite3', 'psql',
  'mysql', 'make', 'gmake', 'cmake', 'ninja', 'npm', 'npx', 'yarn', 'pnpm', 'pip', 'pip3', 'pipx', 'gem',
  'bundle', 'cargo', 'go', 'mvn', 'gradle', 'ant', 'docker', 'podman', 'kubectl', 'helm', 'ansible',
  'ansible-playbook', 'vagrant',
  // programs that run commands through options, hooks, pagers or escapes
  'git', 'tar', 'zip', 'rsync', 'ssh', 'tcpdump', 'dpkg', 'apt', 'apt-get', 'yum', 'dnf', 'rpm', 'vi', 'vim',
  'nvim', 'view', 'vimdiff', 'ex', 'ed', 'emacs', 'nano', 'pico', 'less', 'more', 'most', 'man', 'pg', 'mail',
  'mailx', 'mutt', 'ftp', 'telnet', 'nc', 'ncat', 'netcat', 'socat', 'openssl', 'wget', 'gcc', 'cc', 'ld',
  'install', 'systemctl', 'service', 'journalctl', 'loginctl', 'dbus-send', 'busctl', 'run-parts',
  'start-stop-daemon', 'xdg-open', 'sensible-editor', 'sensible-pager', 'editor', 'pager', 'visudo', 'vipw',
  'crash', 'ssh-agent',
])

/** Interpreters with a version in their name (`python3.11`, `perl5.36`). */
export const VERSIONED_RUNNER = /^(python|pypy|perl|ruby|php|lua|node|tclsh|wish|pip|gcc|g\+\+|clang)[0-9.]*$/

/** Whether a program (its base name) runs another command, a script or code given to it. */
export function runsOtherCommands(base: string): boolean {
  return RUNNERS.has(base) || VERSIONED_RUNNER.test(base)
}
