"""Prints "passed failed skipped" for a JUnit/xunit XML report (Swift Testing's --xunit-output and
pytest's --junitxml alike): one test case counts once, failures and errors as failed."""
import sys
import xml.etree.ElementTree as ET

p = f = s = 0
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    tags = {child.tag for child in case}
    if tags & {"failure", "error"}:
        f += 1
    elif "skipped" in tags:
        s += 1
    else:
        p += 1
print(p, f, s)
