// The console's stylesheet, served as /console/assets/console.css (a module so the build ships it).
// Colours keep a contrast of at least 4.5:1 against their background (WCAG AA).

export const CONSOLE_CSS = `
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;background:#f6f7f9}
a{color:#0b57b7}
.skip{position:absolute;left:-999px}
.skip:focus{left:8px;top:8px;background:#fff;padding:4px 8px;z-index:10}
header{display:flex;align-items:center;gap:24px;padding:10px 20px;background:#1d2a3a;color:#fff}
header a{color:#fff;text-decoration:none;padding:4px 8px;border-radius:4px}
header a[aria-current="page"]{background:#3b5573}
header nav{display:flex;gap:6px;flex:1}
.brand{font-weight:700;letter-spacing:.02em}
.who{margin-right:10px;font-family:ui-monospace,monospace}
header button{background:#fff;color:#1d2a3a}
main{padding:20px;max-width:1200px;margin:0 auto}
main:focus{outline:none}
main.login{max-width:420px;margin:60px auto;background:#fff;padding:28px;border-radius:8px;box-shadow:0 1px 3px #0002}
h1{font-size:1.5em;margin:0 0 12px}
h2{font-size:1.2em;margin:18px 0 8px}
.button,button{display:inline-block;font:inherit;padding:6px 14px;border-radius:5px;border:1px solid #1d4f91;background:#1d4f91;color:#fff;cursor:pointer;text-decoration:none}
button.deny,button.kill{background:#a4161a;border-color:#a4161a}
button.secondary{background:#fff;color:#1d4f91}
label{display:block;font-weight:600;margin:8px 0 2px}
input,select,textarea{font:inherit;padding:5px 7px;border:1px solid #6b7280;border-radius:4px;background:#fff;color:#1b1f24}
textarea{width:100%;min-height:3em}
.token-login input{width:100%;margin-bottom:10px}
.error{color:#a4161a;font-weight:600}
.ok{color:#1e6b32;font-weight:600}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:14px 18px;margin:12px 0}
.card h3{margin:0 0 6px;font-size:1.05em}
pre,code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
pre.statement{background:#f0f2f5;padding:8px 10px;border-radius:4px;white-space:pre-wrap;word-break:break-word}
.chain{display:flex;flex-wrap:wrap;gap:4px;align-items:center;list-style:none;padding:0;margin:4px 0}
.chain li{background:#e8eef6;border-radius:4px;padding:2px 8px}
.chain li+li::before{content:"→ ";color:#374151}
.scope{color:#374151;font-size:12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0}
dl.facts dt{font-weight:600;color:#374151}
dl.facts dd{margin:0}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #d6dae0;vertical-align:top}
th{background:#eef1f5}
.filters{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-end;margin-bottom:10px}
.filters label{margin:0 0 2px}
.badge{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;font-weight:600;background:#e5e7eb;color:#1b1f24}
.badge.allow,.badge.approved{background:#d3f0dc;color:#14532d}
.badge.deny,.badge.denied{background:#fbd5d5;color:#7f1d1d}
.badge.hold,.badge.pending{background:#fdecc8;color:#713f12}
.actions{display:flex;gap:8px;margin-top:8px;align-items:flex-end;flex-wrap:wrap}
.actions textarea{flex:1;min-width:240px}
.status{margin:6px 0}
.player{margin:10px 0;max-width:900px}
`
