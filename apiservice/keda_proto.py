"""KEDA's externalscaler.proto message classes, built at runtime from a descriptor.

Building the FileDescriptorProto in code works with every protobuf runtime from 4.21 on
(generated `_pb2` files pin the runtime to the generator's version). tests/api check that
this descriptor equals what protoc compiles from apiservice/externalscaler.proto.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "externalscaler"
SERVICE = f"{PACKAGE}.ExternalScaler"

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, ftype: int, label: int = _F.LABEL_OPTIONAL, type_name: str = "") -> Any:
    f = _F(name=name, number=number, type=ftype, label=label, json_name=name)
    if type_name:
        f.type_name = type_name
    return f


def file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="externalscaler.proto", package=PACKAGE, syntax="proto3")
    fdp.options.go_package = ".;externalscaler"
    ref = fdp.message_type.add(name="ScaledObjectRef")
    ref.field.extend(
        [
            _field("name", 1, _F.TYPE_STRING),
            _field("namespace", 2, _F.TYPE_STRING),
            _field(
                "scalerMetadata",
                3,
                _F.TYPE_MESSAGE,
                _F.LABEL_REPEATED,
                f".{PACKAGE}.ScaledObjectRef.ScalerMetadataEntry",
            ),
        ]
    )
    entry = ref.nested_type.add(name="ScalerMetadataEntry")
    entry.field.extend([_field("key", 1, _F.TYPE_STRING), _field("value", 2, _F.TYPE_STRING)])
    entry.options.map_entry = True
    fdp.message_type.add(name="IsActiveResponse").field.extend([_field("result", 1, _F.TYPE_BOOL)])
    fdp.message_type.add(name="GetMetricSpecResponse").field.extend(
        [_field("metricSpecs", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, f".{PACKAGE}.MetricSpec")]
    )
    fdp.message_type.add(name="MetricSpec").field.extend(
        [
            _field("metricName", 1, _F.TYPE_STRING),
            _field("targetSize", 2, _F.TYPE_INT64),
            _field("targetSizeFloat", 3, _F.TYPE_DOUBLE),
        ]
    )
    fdp.message_type.add(name="GetMetricsRequest").field.extend(
        [
            _field("scaledObjectRef", 1, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.ScaledObjectRef"),
            _field("metricName", 2, _F.TYPE_STRING),
        ]
    )
    fdp.message_type.add(name="GetMetricsResponse").field.extend(
        [_field("metricValues", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, f".{PACKAGE}.MetricValue")]
    )
    fdp.message_type.add(name="MetricValue").field.extend(
        [
            _field("metricName", 1, _F.TYPE_STRING),
            _field("metricValue", 2, _F.TYPE_INT64),
            _field("metricValueFloat", 3, _F.TYPE_DOUBLE),
        ]
    )
    svc = fdp.service.add(name="ExternalScaler")
    for method, inp, out, stream in (
        ("IsActive", "ScaledObjectRef", "IsActiveResponse", False),
        ("StreamIsActive", "ScaledObjectRef", "IsActiveResponse", True),
        ("GetMetricSpec", "ScaledObjectRef", "GetMetricSpecResponse", False),
        ("GetMetrics", "GetMetricsRequest", "GetMetricsResponse", False),
    ):
        m = svc.method.add(name=method, input_type=f".{PACKAGE}.{inp}", output_type=f".{PACKAGE}.{out}")
        m.options.SetInParent()  # the .proto declares `{}` bodies
        if stream:
            m.server_streaming = True
    return fdp


_pool = descriptor_pool.DescriptorPool()
_pool.Add(file_descriptor_proto())


def _cls(name: str) -> Any:
    desc = _pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
    get = getattr(message_factory, "GetMessageClass", None)
    if get is not None:
        return get(desc)
    return message_factory.MessageFactory(_pool).GetPrototype(desc)  # protobuf < 4.22


ScaledObjectRef = _cls("ScaledObjectRef")
IsActiveResponse = _cls("IsActiveResponse")
GetMetricSpecResponse = _cls("GetMetricSpecResponse")
MetricSpec = _cls("MetricSpec")
GetMetricsRequest = _cls("GetMetricsRequest")
GetMetricsResponse = _cls("GetMetricsResponse")
MetricValue = _cls("MetricValue")
