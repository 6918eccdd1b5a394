"""Is the visitor asking for something the sources cannot say? Checked before the LLM is asked.

Small models answer almost anything: asked for the Wi-Fi password of a cathedral, they make one
up. A tourist's unanswerable questions are mostly requests for a kind of information that a
tour text simply does not hold (a password, a phone number, a person's name in an office, a
parking price). Each such kind is a concept with its words in the tour's languages; when the
question names a concept and none of the attraction's texts shows it, the guide declines without
asking the model. Prices need evidence of a price, phone numbers of a phone number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .lang import fold

__all__ = ["Concept", "CONCEPTS", "asked_concepts", "missing_concepts"]


@dataclass(frozen=True)
class Concept:
    name: str
    asked: re.Pattern  # the question asks for it (matched on accent-folded lowercase text)
    evidence: re.Pattern  # the sources hold it
    words: bool = True  # evidence is words (matched on folded text too), not a pattern like a phone number


def _words(*words: str) -> re.Pattern:
    latin = [fold(w) for w in words if w.isascii() or not re.search(r"[\u3040-\u9fff\uac00-\ud7af]", w)]
    cjk = [w for w in words if w not in latin and re.search(r"[\u3040-\u9fff\uac00-\ud7af]", w)]
    parts = [r"\b" + re.escape(w) + r"\w{0,3}\b" for w in latin] + [re.escape(w) for w in cjk]
    return re.compile("|".join(parts))


_WIFI = ("wifi", "wi fi", "wlan", "wireless", "internet", "password", "mot de passe", "passwort", "kennwort",
         "contrasena", "clave wifi", "senha", "无线网", "无线", "密码", "ワイファイ", "パスワード", "無線", "와이파이", "비밀번호")
_PHONE = ("phone", "telephone", "telefon", "telefono", "telefonnummer", "numero de telephone", "hotline",
          "电话", "電話", "전화")
_EMAIL = ("email", "e mail", "courriel", "邮箱", "電子メール", "メールアドレス", "이메일")
_ROLE = ("director", "directors", "directeur", "directrice", "direktor", "direktorin", "directora", "direttore",
         "direttrice", "diretor", "diretora", "curator", "conservateur", "kurator", "manager", "managerin",
         "gerente", "rector", "rektor", "recteur", "rettore", "reitor", "pfarrer", "priest", "pretre", "owner", "proprietaire", "besitzer", "dueno", "ceo", "president", "prasident", "presidente",
         "馆长", "主任", "负责人", "院长", "館長", "園長", "責任者", "관장")
_PARKING = ("parking", "car park", "parkplatz", "parkhaus", "parken", "aparcamiento", "aparcar", "estacionamiento",
            "parcheggio", "estacionamento", "停车", "駐車", "주차")
_STAFF = ("employees", "staff", "employes", "personnel", "mitarbeiter", "angestellte", "beschaftigte",
          "empleados", "trabajadores", "dipendenti", "funcionarios", "员工", "工作人员", "職員", "従業員", "スタッフ", "직원")
_CLOAK = ("cloakroom", "locker", "lockers", "vestiaire", "consigne", "garderobe", "schliessfach", "consigna",
          "guardaroba", "寄存", "ロッカー", "クローク", "보관함")
_TOILET = ("toilet", "toilets", "restroom", "bathroom", "toilettes", "wc", "toilette", "aseo", "aseos", "banos",
           "bagno", "bagni", "banheiro", "厕所", "洗手间", "卫生间", "トイレ", "화장실")
_MENU = ("menu", "speisekarte", "carta del restaurante", "菜单", "メニュー", "메뉴")
_PRICE_Q = ("how much", "cost", "costs", "price", "prices", "fee", "combien", "coute", "prix", "tarif", "kostet",
            "kosten", "preis", "eintritt", "cuanto cuesta", "cuesta", "precio", "quanto costa", "costa", "prezzo",
            "quanto custa", "custa", "preco", "多少钱", "价格", "票价", "费用", "いくら", "料金", "値段", "얼마")
_PRICE_EVIDENCE = re.compile(r"€|\$|£|¥|\beur\b|\beuros?\b|\bfree\b|\bgratuit|\bkostenlos|\bgratis|\bfrei\b|免费|無料|"
                             r"\bprice|\bprix\b|\bpreis|\bprecio|\bprezzo|\bpreco|票价|料金", re.IGNORECASE)
_PHONE_EVIDENCE = re.compile(r"(?:\+\d{1,3}[ .-]?)?(?:\(?\d{1,4}\)?[ .-]){3,}\d{2,4}")  # +33 1 44 11 23 23

CONCEPTS: tuple[Concept, ...] = (
    Concept("wifi", _words(*_WIFI), _words(*_WIFI)),
    Concept("phone", _words(*_PHONE), _PHONE_EVIDENCE, words=False),
    Concept("email", _words(*_EMAIL), re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"), words=False),
    Concept("person in office", _words(*_ROLE), _words(*_ROLE)),
    Concept("parking", _words(*_PARKING), _words(*_PARKING)),
    Concept("staff", _words(*_STAFF), _words(*_STAFF)),
    Concept("cloakroom", _words(*_CLOAK), _words(*_CLOAK)),
    Concept("toilets", _words(*_TOILET), _words(*_TOILET)),
    Concept("menu", _words(*_MENU), _words(*_MENU)),
    Concept("price", _words(*_PRICE_Q), _PRICE_EVIDENCE, words=False),
)


def asked_concepts(question: str) -> list[Concept]:
    """The kinds of information the question asks for (among CONCEPTS)."""
    folded = fold(question)
    raw = question.casefold()
    return [c for c in CONCEPTS if c.asked.search(folded) or c.asked.search(raw)]


def missing_concepts(question: str, texts: list[str]) -> list[str]:
    """Names of the concepts the question asks for that none of `texts` shows."""
    asked = asked_concepts(question)
    if not asked:
        return []
    joined = "\n".join(texts)
    folded = fold(joined)
    missing = []
    for c in asked:
        if not (c.evidence.search(joined) or (c.words and c.evidence.search(folded))):
            missing.append(c.name)
    return missing
