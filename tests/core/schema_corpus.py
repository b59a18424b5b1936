"""Models as users write them, in pydantic and msgspec, for the MFJS corpus in test_schema.py.

Each entry: (id, type, an instance of it as JSON, the problems Kimi raises for the raw schema as
(rule, path) pairs). The instance proves the normalised schema still accepts real data.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Annotated, Any, Literal, Optional, Union

import msgspec
import pydantic
from typing_extensions import TypedDict


class Color(enum.Enum):
    """A colour."""

    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


# --- pydantic -------------------------------------------------------------------------------


class PPlain(pydantic.BaseModel):
    name: str
    age: int


class POptional(pydantic.BaseModel):
    nickname: Optional[str] = None


class PEnum(pydantic.BaseModel):
    color: Color


class PEnumDescribed(pydantic.BaseModel):
    color: Color = pydantic.Field(description="the ticket colour")


class POptionalEnum(pydantic.BaseModel):
    level: Optional[Level] = None


class PLiteral(pydantic.BaseModel):
    kind: Literal["bug", "feature"]


class PConst(pydantic.BaseModel):
    version: Literal["v1"]


class PLiteralBool(pydantic.BaseModel):
    ok: Literal[True]


class PLiteralMixed(pydantic.BaseModel):
    code: Literal[1, "one"]


class PAddress(pydantic.BaseModel):
    """A postal address."""

    city: str
    zip: Optional[str] = None


class PNested(pydantic.BaseModel):
    address: PAddress


class PNestedDescribed(pydantic.BaseModel):
    address: PAddress = pydantic.Field(description="where to ship")


class PListOfModels(pydantic.BaseModel):
    addresses: list[PAddress]


class PTree(pydantic.BaseModel):
    value: int
    children: list[PTree] = []


class PDict(pydantic.BaseModel):
    counts: dict[str, int]


class PTuple(pydantic.BaseModel):
    pair: tuple[int, str]


class PVarTuple(pydantic.BaseModel):
    values: tuple[int, ...]


class PDatetime(pydantic.BaseModel):
    at: datetime.datetime
    on: datetime.date


class PUUID(pydantic.BaseModel):
    id: uuid.UUID


class PUnion(pydantic.BaseModel):
    value: Union[int, str]


class PUnionNone(pydantic.BaseModel):
    value: Union[int, str, None] = None


class PConstrainedStr(pydantic.BaseModel):
    code: str = pydantic.Field(pattern=r"^[A-Z]{3}$", min_length=3, max_length=3)


class PConstrainedNum(pydantic.BaseModel):
    ratio: float = pydantic.Field(gt=0, lt=1)
    count: int = pydantic.Field(ge=1, multiple_of=2)


class PCat(pydantic.BaseModel):
    pet: Literal["cat"]
    lives: int


class PDog(pydantic.BaseModel):
    pet: Literal["dog"]
    good: bool


class PDiscriminated(pydantic.BaseModel):
    animal: Annotated[Union[PCat, PDog], pydantic.Field(discriminator="pet")]


class PDecimal(pydantic.BaseModel):
    amount: decimal.Decimal


class PAny(pydantic.BaseModel):
    extra: Any
    bag: dict[str, Any]


class PTicket(pydantic.BaseModel):
    """A support ticket."""

    title: str = pydantic.Field(description="one line")
    priority: Level = Level.LOW
    tags: list[str] = []
    assignee: Optional[PAddress] = None
    due: Optional[datetime.date] = None


# --- msgspec --------------------------------------------------------------------------------


class MPlain(msgspec.Struct):
    name: str
    age: int


class MOptional(msgspec.Struct):
    nickname: Optional[str] = None


class MEnum(msgspec.Struct):
    color: Color
    level: Level


class MLiteral(msgspec.Struct):
    kind: Literal["bug", "feature"]
    version: Literal["v1"]


class MAddress(msgspec.Struct):
    city: str
    zip: Optional[str] = None


class MNested(msgspec.Struct):
    address: MAddress
    history: list[MAddress]


class MTree(msgspec.Struct):
    value: int
    children: list[MTree] = []


class MTuple(msgspec.Struct):
    pair: tuple[int, str]
    same: tuple[int, int]


class MDatetime(msgspec.Struct):
    at: datetime.datetime
    on: datetime.date
    id: uuid.UUID


class MConstrained(msgspec.Struct):
    code: Annotated[str, msgspec.Meta(pattern="^[A-Z]+$", max_length=5)]
    ratio: Annotated[float, msgspec.Meta(gt=0, lt=1)]
    even: Annotated[int, msgspec.Meta(multiple_of=2)]


class MUnion(msgspec.Struct):
    value: Union[int, str, None] = None
    mapping: dict[str, list[int]] = {}


class MCat(msgspec.Struct, tag="cat"):
    lives: int


class MDog(msgspec.Struct, tag="dog"):
    good: bool


class MTagged(msgspec.Struct):
    animal: Union[MCat, MDog]


class MSet(msgspec.Struct):
    labels: frozenset[str]


@dataclasses.dataclass
class DPoint:
    x: float
    y: float
    label: Optional[str] = None


class TDUser(TypedDict):
    name: str
    roles: list[Literal["admin", "user"]]


def _json(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    return msgspec.json.decode(msgspec.json.encode(value))


_D = datetime.date(2026, 12, 2)
_T = datetime.datetime(2026, 12, 2, 6, 0, tzinfo=datetime.timezone.utc)
_U = uuid.UUID(int=7)
_A = PAddress(city="北京")

CORPUS: list[tuple[str, Any, Any, set[tuple[str, str]]]] = [
    ("pydantic-plain", PPlain, PPlain(name="a", age=1), set()),
    ("pydantic-optional", POptional, POptional(nickname="x"), {("anyof-siblings", "properties.nickname")}),
    ("pydantic-enum", PEnum, PEnum(color=Color.RED), set()),
    ("pydantic-enum-described", PEnumDescribed, PEnumDescribed(color=Color.GREEN),
     {("ref-siblings", "properties.color")}),
    ("pydantic-optional-enum", POptionalEnum, POptionalEnum(level=Level.HIGH),
     {("anyof-siblings", "properties.level")}),
    ("pydantic-literal", PLiteral, PLiteral(kind="bug"), set()),
    ("pydantic-const", PConst, PConst(version="v1"), {("unsupported", "properties.version")}),
    ("pydantic-literal-bool", PLiteralBool, PLiteralBool(ok=True), {("unsupported", "properties.ok")}),
    ("pydantic-literal-mixed", PLiteralMixed, PLiteralMixed(code="one"), {("type-missing", "properties.code")}),
    ("pydantic-nested", PNested, PNested(address=_A), {("anyof-siblings", "$defs.PAddress.properties.zip")}),
    ("pydantic-nested-described", PNestedDescribed, PNestedDescribed(address=_A),
     {("anyof-siblings", "$defs.PAddress.properties.zip"), ("ref-siblings", "properties.address")}),
    ("pydantic-list-of-models", PListOfModels, PListOfModels(addresses=[_A, _A]),
     {("anyof-siblings", "$defs.PAddress.properties.zip")}),
    ("pydantic-recursive", PTree, PTree(value=1, children=[PTree(value=2)]), {("root-type", "root")}),
    ("pydantic-dict", PDict, PDict(counts={"a": 1}), set()),
    ("pydantic-tuple", PTuple, PTuple(pair=(1, "x")), {("unsupported", "properties.pair")}),
    ("pydantic-var-tuple", PVarTuple, PVarTuple(values=(1, 2, 3)), set()),
    ("pydantic-datetime", PDatetime, PDatetime(at=_T, on=_D),
     {("unsupported", "properties.at"), ("unsupported", "properties.on")}),
    ("pydantic-uuid", PUUID, PUUID(id=_U), {("unsupported", "properties.id")}),
    ("pydantic-union", PUnion, PUnion(value="x"), set()),
    ("pydantic-union-none", PUnionNone, PUnionNone(value=3), {("anyof-siblings", "properties.value")}),
    ("pydantic-constrained-str", PConstrainedStr, PConstrainedStr(code="ABC"), {("unsupported", "properties.code")}),
    ("pydantic-constrained-num", PConstrainedNum, PConstrainedNum(ratio=0.5, count=2),
     {("unsupported", "properties.ratio"), ("unsupported", "properties.count")}),
    ("pydantic-discriminated", PDiscriminated, PDiscriminated(animal=PDog(pet="dog", good=True)),
     {("unsupported", "properties.animal"), ("type-missing", "properties.animal"),
      ("unsupported", "$defs.PCat.properties.pet"),
      ("unsupported", "$defs.PDog.properties.pet")}),
    ("pydantic-decimal", PDecimal, PDecimal(amount=decimal.Decimal("1.50")), set()),
    ("pydantic-any", PAny, PAny(extra=[1, "x"], bag={"k": None}), {("type-missing", "properties.extra")}),
    ("pydantic-ticket", PTicket, PTicket(title="t", assignee=_A, due=_D),
     {("anyof-siblings", "$defs.PAddress.properties.zip"), ("ref-siblings", "properties.priority"),
      ("anyof-siblings", "properties.assignee"), ("anyof-siblings", "properties.due"),
      ("unsupported", "properties.due.anyOf.0")}),
    ("msgspec-plain", MPlain, MPlain("a", 1), {("root-type", "root")}),
    ("msgspec-optional", MOptional, MOptional("x"), {("root-type", "root"), ("anyof-siblings", "$defs.MOptional.properties.nickname")}),
    ("msgspec-enum", MEnum, MEnum(Color.RED, Level.LOW),
     {("root-type", "root"), ("type-missing", "$defs.Color"), ("type-missing", "$defs.Level")}),
    ("msgspec-literal", MLiteral, MLiteral("bug", "v1"),
     {("root-type", "root"), ("type-missing", "$defs.MLiteral.properties.kind"),
      ("type-missing", "$defs.MLiteral.properties.version")}),
    ("msgspec-nested", MNested, MNested(MAddress("上海"), [MAddress("x", "1")]),
     {("root-type", "root"), ("anyof-siblings", "$defs.MAddress.properties.zip")}),
    ("msgspec-recursive", MTree, MTree(1, [MTree(2)]), {("root-type", "root")}),
    ("msgspec-tuple", MTuple, MTuple((1, "a"), (2, 3)),
     {("root-type", "root"), ("unsupported", "$defs.MTuple.properties.pair"),
      ("items-object", "$defs.MTuple.properties.pair.items"), ("unsupported", "$defs.MTuple.properties.same"),
      ("items-object", "$defs.MTuple.properties.same.items")}),
    ("msgspec-datetime", MDatetime, MDatetime(_T, _D, _U),
     {("root-type", "root"), ("unsupported", "$defs.MDatetime.properties.on"), ("unsupported", "$defs.MDatetime.properties.id")}),
    ("msgspec-constrained", MConstrained, MConstrained("ABC", 0.25, 4),
     {("root-type", "root"), ("unsupported", "$defs.MConstrained.properties.code"),
      ("unsupported", "$defs.MConstrained.properties.ratio"), ("unsupported", "$defs.MConstrained.properties.even")}),
    ("msgspec-union", MUnion, MUnion("x", {"a": [1]}), {("root-type", "root"), ("anyof-siblings", "$defs.MUnion.properties.value"),}),
    ("msgspec-tagged", MTagged, MTagged(MDog(True)),
     {("root-type", "root"), ("anyof-siblings", "$defs.MTagged.properties.animal"),
      ("type-missing", "$defs.MCat.properties.type"), ("type-missing", "$defs.MDog.properties.type")}),
    ("msgspec-set", MSet, MSet(frozenset({"a", "b"})), {("root-type", "root"), ("unsupported", "$defs.MSet.properties.labels")}),
    ("dataclass", DPoint, DPoint(1.0, 2.5, "p"), {("root-type", "root"), ("anyof-siblings", "$defs.DPoint.properties.label")}),
    ("typeddict", TDUser, {"name": "n", "roles": ["admin"]},
     {("root-type", "root"), ("type-missing", "$defs.TDUser.properties.roles.items")}),
]
