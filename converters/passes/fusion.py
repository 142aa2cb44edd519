"""Pass (``ort-int8``): report which layers onnxruntime's CPU provider runs as integer kernels.

Creates one session with all optimisations (the QDQ fusions run at ``ORT_ENABLE_EXTENDED`` and above) and reads
the optimised graph: a layer fused when its INT8 weight initializer feeds QLinearConv, QGemm, QLinearMatMul,
MatMulIntegerToFloat or ConvInteger/MatMulInteger. onnxruntime is imported here only.
"""

from __future__ import annotations

import os
import tempfile

import onnx
import onnx_ir as ir

from converters.passes._context import ExportContext

__all__ = ["INTEGER_KERNELS", "report_fusion"]

INTEGER_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger",
                   "DynamicQuantizeMatMul")


def report_fusion(ctx: ExportContext) -> None:
    import onnxruntime as ort

    data = ir.serde.serialize_model(ctx.model).SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        opts.intra_op_num_threads = 1
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath, load_external_data=False)
    kernel_of = {}
    for node in optimized.graph.node:
        for name in node.input:
            kernel_of.setdefault(name, node.op_type)
    for layer in ctx.layers:
        weight_int = next((n.inputs[0] for n in ctx.model.graph
                           if n.op_type == "DequantizeLinear" and n.outputs[0] is layer.value), None)
        op = kernel_of.get(weight_int.name if weight_int is not None else "", "")
        layer.fused = op if op in INTEGER_KERNELS else ""
        ctx.fused[layer.name] = layer.fused or "float"
