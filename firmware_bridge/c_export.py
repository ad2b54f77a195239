"""A dose bundle as a firmware package for TensorFlow Lite Micro.

For one model (int8 or float) of a verified dose bundle, :func:`package_files` gives:

* ``<name>.h`` — the model as a 16-byte-aligned C array, the feature order, the scaling, the
  quantisation, what the output means, and two inline functions that build the model's input
  from raw features and turn its output into units exactly as the device does;
* ``<name>_golden.h`` — golden vectors: raw features, the input tensor, the output tensor the
  device's interpreter gave and the units;
* ``advisor_check.c`` — a host check (any C11 compiler): the model bytes are intact, the inline
  functions reproduce the golden input tensors and units; on the target the same vectors check
  the interpreter (``README.md`` says how);
* ``README.md``.

Text generation is pure; :func:`golden_vectors` runs the device's own interpreter and
:func:`tflm_outputs` TensorFlow Lite Micro's (the ``tflite-micro`` package) when installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from device.models.bundle import Bundle
from device.models.inference import DoseModel

BYTES_PER_LINE = 12
INPUT_STEP_TOLERANCE = 1  # int8 input elements may differ by one step on a target with other float rounding
UNITS_TOLERANCE = 1e-4


def c_identifier(text: str) -> str:
    """A safe C identifier derived from ``text``."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return ident if ident and not ident[0].isdigit() else f"m_{ident}"


class ExportError(ValueError):
    """A bundle that cannot be exported for firmware; the message says why."""


def check_exportable(bundle: Bundle) -> None:
    """Only the dose model runs on bedside firmware; a companion bundle is refused with the reason."""
    if bundle.name != "dose" or "window" not in bundle.manifest.features or bundle.manifest.scaling is None:
        raise ExportError(
            f"bundle {bundle.name} is a companion model: it reads a visit history that bedside firmware does "
            "not hold, so it is not exported for a microcontroller (export the dose bundle)"
        )


@dataclass(frozen=True)
class GoldenVector:
    """One worked example: what the firmware computes at each stage for one decision."""

    raw: np.ndarray  # (window, features) float32: the features as the device builds them
    model_input: np.ndarray  # (window, features) int8 or float32: the interpreter's input tensor
    model_output: float  # the interpreter's output element (an int8 step for int8 models)
    units: float  # what goes to the safety supervisor


def golden_vectors(bundle: Bundle, role: str) -> list[GoldenVector]:
    """The manifest's golden windows through the device's own scaling, quantisation and interpreter."""
    check_exportable(bundle)
    model = DoseModel(bundle, role)
    vectors = []
    for pair in bundle.manifest.golden:
        raw = np.asarray(pair.input, dtype=np.float32)
        tensor = model.model_input(raw)
        output = model.run_tensor(tensor)
        vectors.append(GoldenVector(raw, tensor[0], float(output.reshape(-1)[0]), model.units(output, raw)))
    if not vectors:
        raise ExportError(f"bundle {bundle.name} {bundle.version} has no golden windows to export")
    return vectors


def tflm_outputs(model: bytes, vectors: list[GoldenVector]) -> list[float] | None:
    """Each golden input through TensorFlow Lite Micro's interpreter; None when it is not installed."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        return None
    interpreter = runtime.Interpreter.from_bytes(model)
    outputs = []
    for vector in vectors:
        interpreter.set_input(vector.model_input[None, ...], 0)
        interpreter.invoke()
        outputs.append(float(np.asarray(interpreter.get_output(0)).reshape(-1)[0]))
    return outputs


def fnv1a(data: bytes) -> int:
    """32-bit FNV-1a: a checksum the firmware recomputes without a hash library."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def _float(value: float) -> str:
    text = f"{float(np.float32(value)):.9g}"
    return (text if any(c in text for c in ".en") else text + ".0") + "f"


def _rows(values: list[str], indent: str = "    ", per_line: int = 8) -> list[str]:
    return [indent + ", ".join(values[i : i + per_line]) + "," for i in range(0, len(values), per_line)]


@dataclass(frozen=True)
class Names:
    """The C names of one exported model."""

    base: str  # advisor_dose_int8

    @property
    def macro(self) -> str:
        return self.base.upper()


def names_for(bundle: Bundle, role: str) -> Names:
    return Names(c_identifier(f"advisor_{bundle.name}_{role}"))


def header_text(bundle: Bundle, role: str = "int8") -> str:
    """``<name>.h``: the model, its constants and the input/output functions."""
    check_exportable(bundle)
    model = bundle.model_bytes(role)
    entry = bundle.manifest.models[role]
    n, m = names_for(bundle, role).base, names_for(bundle, role).macro
    spec = bundle.feature_spec
    scaling = bundle.manifest.scaling or {}
    residual = bundle.manifest.output.residual_of
    int8 = entry.input.dtype == "int8"
    tensor_type = "int8_t" if int8 else "float"
    output_sentence = (
        f"the CHANGE from the patient's usual regular-insulin dose, in units: add feature\n *   {residual} "
        f"of the newest row (index {m}_RESIDUAL_FEATURE)."
        if residual
        else "the next regular-insulin dose in units."
    )
    lines = [
        f"/* Generated by 'advisor export-c' from bundle {bundle.name} {bundle.version} ({role}). Do not edit;",
        " * regenerate from the signed bundle.",
        " *",
        f" * Input: {spec.window} steps x {spec.n_features} features, row 0 the oldest step and row {spec.window - 1} "
        "the current decision",
        " *   (its dose unknown); missing steps are all-zero rows with present = 0. Feature order:",
        f" *   {m}_FEATURE_NAMES. Each value is standardised, s = (x - mean) / std, clipped to +-{m}_CLIP,",
        " *   then quantised, q = round-half-even(s / INPUT_SCALE + INPUT_ZERO_POINT) in [-128, 127]."
        if int8
        else " *   and given to the model as float.",
        f" *   {n}_input() does this exactly as the device does.",
        f" * Output: one value; dequantised (int8: (q - OUTPUT_ZERO_POINT) * OUTPUT_SCALE) it is {output_sentence}",
        f" *   {n}_units() does this.",
        " * The units are a model estimate, NOT a dose: they must pass the same safety supervisor as on the",
        " * device (docs/safety.md), and a person confirms every dose. Decision support, not a certified",
        " * medical device. */",
        f"#ifndef {m}_H",
        f"#define {m}_H",
        "",
        "#include <math.h>",
        "#include <stdint.h>",
        "",
        "#if defined(__GNUC__) || defined(__clang__)",
        "#define ADVISOR_ALIGN16 __attribute__((aligned(16)))",
        "#else",
        "#define ADVISOR_ALIGN16 _Alignas(16)",
        "#endif",
        "",
        f'#define {m}_VERSION "{bundle.version}"',
        f'#define {m}_SHA256 "{bundle.manifest.files[entry.file].sha256}"',
        f"#define {m}_FNV1A 0x{fnv1a(model):08x}u",
        f"#define {m}_WINDOW {spec.window}",
        f"#define {m}_FEATURES {spec.n_features}",
        f"#define {m}_CLIP {_float(scaling['clip'])}",
    ]
    if residual:
        lines.append(f"#define {m}_RESIDUAL_FEATURE {spec.names.index(residual)}")
    for key, quant in (("input", entry.input), ("output", entry.output)):
        if quant.scale:
            lines.append(f"#define {m}_{key.upper()}_SCALE {_float(quant.scale)}")
            lines.append(f"#define {m}_{key.upper()}_ZERO_POINT {quant.zero_point}")
    lines += ["", f"static const char *const {m}_FEATURE_NAMES[{spec.n_features}] = {{"]
    lines += _rows([f'"{name}"' for name in spec.names], per_line=4)
    lines += ["};", f"static const float {n}_mean[{spec.n_features}] = {{"]
    lines += _rows([_float(v) for v in scaling["mean"]], per_line=6)
    lines += ["};", f"static const float {n}_std[{spec.n_features}] = {{"]
    lines += _rows([_float(v) for v in scaling["std"]], per_line=6)
    lines += ["};", ""]
    quantise = (
        f"            float q = nearbyintf(s / {m}_INPUT_SCALE + {m}_INPUT_ZERO_POINT);\n"
        "            out[t][f] = (int8_t)(q > 127.0f ? 127.0f : q < -128.0f ? -128.0f : q);"
        if int8
        else "            out[t][f] = s;"
    )
    lines += [
        "/* The model's input tensor from raw features (round-half-even: the default rounding mode). */",
        f"static inline void {n}_input(const float raw[{m}_WINDOW][{m}_FEATURES], "
        f"{tensor_type} out[{m}_WINDOW][{m}_FEATURES]) {{",
        f"    for (int t = 0; t < {m}_WINDOW; t++) {{",
        f"        for (int f = 0; f < {m}_FEATURES; f++) {{",
        f"            float s = (raw[t][f] - {n}_mean[f]) / {n}_std[f];",
        f"            s = s > {m}_CLIP ? {m}_CLIP : s < -{m}_CLIP ? -{m}_CLIP : s;",
        quantise,
        "        }",
        "    }",
        "}",
        "",
        "/* Units from the model's output element (before the safety supervisor). */",
        f"static inline float {n}_units({tensor_type} output, const float raw[{m}_WINDOW][{m}_FEATURES]) {{",
        f"    float value = ((float)output - {m}_OUTPUT_ZERO_POINT) * {m}_OUTPUT_SCALE;"
        if int8
        else "    float value = output;",
    ]
    if residual:
        lines.append(f"    return value + raw[{m}_WINDOW - 1][{m}_RESIDUAL_FEATURE];")
    else:
        lines += ["    (void)raw;", "    return value;"]
    lines += [
        "}",
        "",
        f"static const unsigned int {n}_len = {len(model)}u;",
        f"static ADVISOR_ALIGN16 const unsigned char {n}[{len(model)}] = {{",
    ]
    lines += _rows([f"0x{b:02x}" for b in model], per_line=BYTES_PER_LINE)
    lines += ["};", "", f"#endif /* {m}_H */", ""]
    return "\n".join(lines)


def golden_text(bundle: Bundle, role: str, vectors: list[GoldenVector]) -> str:
    """``<name>_golden.h``: each vector's raw features, input tensor, output element and units."""
    n, m = names_for(bundle, role).base, names_for(bundle, role).macro
    int8 = vectors[0].model_input.dtype == np.int8
    tensor_type = "int8_t" if int8 else "float"
    spec = bundle.feature_spec
    dims = f"[{m}_GOLDEN_COUNT][{m}_WINDOW][{m}_FEATURES]"

    def cells(array: np.ndarray) -> list[str]:
        return [str(int(v)) if int8 else _float(v) for v in array.reshape(-1)]

    lines = [
        f"/* Golden vectors of bundle {bundle.name} {bundle.version} ({role}), computed by the device's scaling,",
        " * quantisation and TFLite interpreter. Do not edit. */",
        f"#ifndef {m}_GOLDEN_H",
        f"#define {m}_GOLDEN_H",
        "",
        f'#include "{n}.h"',
        "",
        f"#define {m}_GOLDEN_COUNT {len(vectors)}",
        "",
        f"static const float {n}_golden_raw{dims} = {{",
    ]
    for vector in vectors:
        lines.append("    {")
        for row in vector.raw.reshape(spec.window, spec.n_features):
            lines += ["        {", *_rows([_float(v) for v in row], indent="            ", per_line=6), "        },"]
        lines.append("    },")
    lines += ["};", f"static const {tensor_type} {n}_golden_input{dims} = {{"]
    for vector in vectors:
        lines.append("    {")
        for row in vector.model_input.reshape(spec.window, spec.n_features):
            lines += ["        {", *_rows(cells(row), indent="            ", per_line=16), "        },"]
        lines.append("    },")
    outputs = [str(int(v.model_output)) if int8 else _float(v.model_output) for v in vectors]
    lines += [
        "};",
        f"static const {tensor_type} {n}_golden_output[{m}_GOLDEN_COUNT] = {{{', '.join(outputs)}}};",
        f"static const float {n}_golden_units[{m}_GOLDEN_COUNT] = {{{', '.join(_float(v.units) for v in vectors)}}};",
        "",
        f"#endif /* {m}_GOLDEN_H */",
        "",
    ]
    return "\n".join(lines)


def check_program(bundle: Bundle, role: str) -> str:
    """``advisor_check.c``: the host check of the package (exit 0 when every vector passes)."""
    n, m = names_for(bundle, role).base, names_for(bundle, role).macro
    int8 = bundle.manifest.models[role].input.dtype == "int8"
    difference = (
        "int d = abs((int)q[t][f] - (int)golden[t][f]);" if int8 else "float d = fabsf(q[t][f] - golden[t][f]);"
    )
    allowed = f"{INPUT_STEP_TOLERANCE}" if int8 else "1e-5f"
    return f"""/* Host check of the firmware package for {bundle.name} {bundle.version} ({role}); generated by
 * 'advisor export-c'. Build and run: cc -std=c11 -O2 -o advisor_check advisor_check.c -lm && ./advisor_check
 * It checks the model bytes, and that {n}_input() and {n}_units() reproduce the device's
 * input tensors and units for every golden vector. On the target, also give each golden input
 * tensor to the interpreter and expect the golden output (README.md). */
#include <stdio.h>
#include <stdlib.h>

#include "{n}_golden.h"

static uint32_t fnv1a(const unsigned char *data, unsigned int length) {{
    uint32_t value = 0x811c9dc5u;
    for (unsigned int i = 0; i < length; i++) {{
        value = (value ^ data[i]) * 0x01000193u;
    }}
    return value;
}}

int main(void) {{
    int failures = 0;
    if (fnv1a({n}, {n}_len) != {m}_FNV1A) {{
        printf("FAIL model bytes: checksum differs from {m}_FNV1A (a damaged or edited header)\\n");
        failures++;
    }}
    for (int g = 0; g < {m}_GOLDEN_COUNT; g++) {{
        {"int8_t" if int8 else "float"} q[{m}_WINDOW][{m}_FEATURES];
        {n}_input({n}_golden_raw[g], q);
        const {"int8_t" if int8 else "float"} (*golden)[{m}_FEATURES] = {n}_golden_input[g];
        double worst = 0;
        int differing = 0;
        for (int t = 0; t < {m}_WINDOW; t++) {{
            for (int f = 0; f < {m}_FEATURES; f++) {{
                {difference}
                if (d > 0) differing++;
                if (d > worst) worst = d;
            }}
        }}
        float units = {n}_units({n}_golden_output[g], {n}_golden_raw[g]);
        float expected = {n}_golden_units[g];
        int ok = worst <= {allowed} && fabsf(units - expected) <= {UNITS_TOLERANCE}f;
        printf("%s vector %d: input %d of %d elements differ (worst %g), output -> %.4f U (device %.4f U)\\n",
               ok ? "ok  " : "FAIL", g, differing, {m}_WINDOW * {m}_FEATURES, worst, units, expected);
        failures += !ok;
    }}
    printf("%s: %d golden vectors, %d failures\\n", {m}_VERSION, {m}_GOLDEN_COUNT, failures);
    return failures ? 1 : 0;
}}
"""


def readme_text(bundle: Bundle, role: str, vectors: list[GoldenVector]) -> str:
    """``README.md`` of the package: the files, the input, the output, the checks."""
    n, m = names_for(bundle, role).base, names_for(bundle, role).macro
    spec = bundle.feature_spec
    residual = bundle.manifest.output.residual_of
    entry = bundle.manifest.models[role]
    size = len(bundle.model_bytes(role))
    return f"""# Firmware package: {bundle.name} {bundle.version} ({role})

Generated by `advisor export-c` from the signed bundle; regenerate, do not edit. Decision
support, not a certified medical device: the model's units must pass the same safety supervisor
as on the bedside device, and a person confirms every dose.

| file | what it holds |
|---|---|
| `{n}.h` | the model ({size} bytes, 16-byte aligned), features, scaling, quantisation, `{n}_input()`, `{n}_units()` |
| `{n}_golden.h` | {len(vectors)} golden vectors: raw features, input tensor, output element, units |
| `advisor_check.c` | the host check: model bytes intact, input and units reproduced for every vector |

## Input

`{spec.window}` steps × `{spec.n_features}` features (`{m}_FEATURE_NAMES`, in input order); row 0
is the oldest step, row {spec.window - 1} the current decision with its dose unknown; missing steps are all-zero
rows with `present = 0`. `{n}_input()` standardises with `{n}_mean`/`{n}_std`, clips to
±`{m}_CLIP` and{
        " quantises with `" + m + "_INPUT_SCALE`/`" + m + "_INPUT_ZERO_POINT` (round half to even)"
        if entry.input.dtype == "int8"
        else " passes floats"
    } — the device's own arithmetic.

## Output

One value. {
        "Dequantised, it is the **change from the patient's usual regular-insulin dose** in units; "
        f"`{n}_units()` adds feature `{residual}` of the newest row (`{m}_RESIDUAL_FEATURE`)."
        if residual
        else "It is the next regular-insulin dose in units (`" + n + "_units()`)."
    }

## Checks

On any machine with a C compiler:

```sh
cc -std=c11 -O2 -o advisor_check advisor_check.c -lm && ./advisor_check
```

On the target, with TensorFlow Lite for Microcontrollers: build an interpreter over `{n}`,
copy `{n}_golden_input[g]` into the input tensor, invoke, and expect `{n}_golden_output[g]`
(int8 kernels may differ by one step) before the firmware uses the model. `advisor export-c`
already ran these vectors through TFLite Micro's own interpreter (the `tflite-micro` Python
package) when it was installed, and printed the result.
"""


def package_files(bundle: Bundle, role: str, vectors: list[GoldenVector]) -> dict[str, str]:
    """File name → text of the whole package."""
    n = names_for(bundle, role).base
    return {
        f"{n}.h": header_text(bundle, role),
        f"{n}_golden.h": golden_text(bundle, role, vectors),
        "advisor_check.c": check_program(bundle, role),
        "README.md": readme_text(bundle, role, vectors),
    }
