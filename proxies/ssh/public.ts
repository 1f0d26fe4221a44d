// What other plugins may use of the SSH plugin (the MCP plugin runs commands through it): where
// its host key lives, and the status line it appends to a refused command's stderr (its type, GatewayStatus, is in proxies/types.ts). A plugin
// imports another plugin only through that plugin's public.ts; `npm run check` refuses any deeper path.

export { HOST_KEY_FILE } from './index.js'
export { STATUS_ENV, takeStatus } from './status.js'
