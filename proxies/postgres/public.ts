// What other plugins may use of the PostgreSQL plugin (the MCP plugin audits the SQL its tools
// run): password redaction and literal-free shapes of a statement. A plugin imports another plugin
// only through that plugin's public.ts; `npm run check` refuses any deeper path.

export { redactSql } from './redact.js'
export { LITERAL_MARK, sqlShape } from './sql/shape.js'
