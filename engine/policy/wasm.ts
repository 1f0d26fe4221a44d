// One compiled policy, loaded with @open-policy-agent/opa-wasm and kept for every evaluation.
// The SDK's `evaluate` serializes the input, allocates a fresh TextEncoder and a copy per call;
// on ABI 1.2 modules (every opa 1.x build) we do the same work without the garbage: the input
// JSON, which the engine assembles from cached pieces anyway, is encoded straight into the
// module's memory and `opa_eval` runs it (the SDK's own fast path, minus the copies). Anything
// unexpected about the module falls back to the SDK's `evaluate`.

import * as opaWasm from '@open-policy-agent/opa-wasm'

/** The part of the SDK's LoadedPolicy we use; its published types are incomplete. */
interface SdkPolicy {
  evaluate(input: unknown, entrypoint?: number | string): unknown
  setData(data: object | ArrayBuffer): void
  readonly entrypoints: unknown
  readonly wasmInstance: unknown
  readonly mem: unknown
  readonly dataAddr: unknown
  readonly dataHeapPtr: unknown
  readonly minorVersion: unknown
}

type LoadPolicy = (wasm: Uint8Array, memory?: { initial: number; maximum?: number }) => Promise<SdkPolicy>
const loadPolicy = (opaWasm as unknown as { loadPolicy: LoadPolicy }).loadPolicy

type OpaEval = (reserved: number, entrypoint: number, data: number, input: number, inputLen: number, heap: number, format: number) => number

const PAGE = 64 * 1024

/** WebAssembly.Memory, as far as we use it (the project's lib settings carry no WebAssembly types). */
interface WasmMemory {
  readonly buffer: ArrayBuffer
  grow(pages: number): number
}

function isMemory(v: unknown): v is WasmMemory {
  return (
    typeof v === 'object' &&
    v !== null &&
    (v as { buffer?: unknown }).buffer instanceof ArrayBuffer &&
    typeof (v as { grow?: unknown }).grow === 'function'
  )
}

function exportsOf(instance: unknown): Record<string, unknown> | null {
  if (typeof instance !== 'object' || instance === null) return null
  const ex = (instance as { exports?: unknown }).exports
  return typeof ex === 'object' && ex !== null ? (ex as Record<string, unknown>) : null
}

function errorText(err: unknown): string {
  // The SDK throws strings as well as Errors.
  return err instanceof Error ? err.message : String(err)
}

export class PolicyModule {
  private readonly encoder = new TextEncoder()
  private readonly fast: { opaEval: OpaEval; mem: WasmMemory; dataAddr: number; heap: number } | null
  private view: Uint8Array

  private constructor(
    private readonly sdk: SdkPolicy,
    readonly entrypoints: ReadonlyMap<string, number>,
  ) {
    const opaEval = exportsOf(sdk.wasmInstance)?.opa_eval
    const { mem, dataAddr, dataHeapPtr, minorVersion } = sdk
    if (
      typeof opaEval === 'function' &&
      isMemory(mem) &&
      typeof dataAddr === 'number' &&
      typeof dataHeapPtr === 'number' &&
      typeof minorVersion === 'number' &&
      minorVersion >= 2
    ) {
      this.fast = { opaEval: opaEval as OpaEval, mem, dataAddr, heap: dataHeapPtr }
      this.view = new Uint8Array(mem.buffer)
    } else {
      this.fast = null
      this.view = new Uint8Array(0)
    }
  }

  /** Instantiates the module and loads its data document (once; evaluations reuse both). */
  static async load(wasm: Uint8Array, data: object): Promise<PolicyModule> {
    let sdk: SdkPolicy
    try {
      sdk = await loadPolicy(wasm, { initial: 8 })
      sdk.setData(data)
    } catch (err) {
      throw new Error(`the policy module cannot be loaded: ${errorText(err)}`)
    }
    const eps = new Map<string, number>()
    const raw = sdk.entrypoints
    if (typeof raw === 'object' && raw !== null) {
      for (const [k, v] of Object.entries(raw)) if (typeof v === 'number') eps.set(k, v)
    }
    return new PolicyModule(sdk, eps)
  }

  /** Evaluates one entrypoint with an input given as JSON text; returns the parsed result set. */
  evaluate(entrypoint: number, inputJson: string): unknown {
    const f = this.fast
    if (f === null) {
      try {
        return this.sdk.evaluate(this.encoder.encode(inputJson).buffer, entrypoint)
      } catch (err) {
        throw new Error(`policy evaluation failed: ${errorText(err)}`)
      }
    }
    const addr = f.heap
    const need = addr + inputJson.length * 3 - f.mem.buffer.byteLength
    if (need > 0) f.mem.grow(Math.ceil(need / PAGE))
    if (this.view.buffer !== f.mem.buffer) this.view = new Uint8Array(f.mem.buffer)
    const { written } = this.encoder.encodeInto(inputJson, this.view.subarray(addr))
    let ret: number
    try {
      ret = f.opaEval(0, entrypoint, f.dataAddr, addr, written, addr + written, 0)
    } catch (err) {
      throw new Error(`policy evaluation failed: ${errorText(err)}`)
    }
    // Evaluation may have grown the memory: the old view would be detached.
    if (this.view.buffer !== f.mem.buffer) this.view = new Uint8Array(f.mem.buffer)
    const end = this.view.indexOf(0, ret)
    if (end < 0) throw new Error('policy evaluation failed: unterminated result')
    return JSON.parse(Buffer.from(f.mem.buffer, ret, end - ret).toString('utf8'))
  }
}
