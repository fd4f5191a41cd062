#!/bin/sh
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Run once in the image build (the Dockerfile's spark-build stage); makes
#   /opt/spark/venv     pyspark (Apache Spark 3.5, its jars and bin/ scripts) in a venv of its own
#   /opt/spark/home     SPARK_HOME: the pyspark package directory of that venv
#   /opt/iceberg/       the Iceberg Spark runtime jar out of snowpark-connect-deps-iceberg (unchanged),
#                       its licence files, and Jackson relocated the way Iceberg's runtime expects it
# from the wheels in /tmp/spark-wheels (downloaded on the host) and Debian's jarjar.
#
# Why the relocation: the snowpark-connect-deps-iceberg jar leaves out the shaded Jackson that
# Apache's iceberg-spark-runtime jar carries (org.apache.iceberg.shaded.com.fasterxml.jackson),
# so Iceberg core fails with NoClassDefFoundError .../JsonFactoryBuilder. Spark's own Jackson
# jars, relocated to that package, supply it.
set -eu

WHEELS=/tmp/spark-wheels
BUILD=/tmp/spark-build
RUNTIME_JAR=iceberg-spark-runtime-3.5_2.12-1.10.2.jar
JAR_WHEEL=snowpark-connect-deps-iceberg

python3 -m venv /opt/spark/venv
# Everything pinned in requirements.txt but the jar wheel, which is not installed.
grep -v "^$JAR_WHEEL" "$BUILD/requirements.txt" > /tmp/spark-py-requirements.txt
/opt/spark/venv/bin/pip install -q --no-cache-dir --disable-pip-version-check --no-index \
    --find-links "$WHEELS" -r /tmp/spark-py-requirements.txt
SPARK_HOME=$(/opt/spark/venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
ln -s "$SPARK_HOME" /opt/spark/home
chmod +x "$SPARK_HOME"/bin/*

mkdir -p /opt/iceberg/licenses
python3 - "$WHEELS" "$RUNTIME_JAR" <<'EOF'
import glob, os, shutil, sys, zipfile
wheels, jar = sys.argv[1:]
found = glob.glob(os.path.join(wheels, "snowpark_connect_deps_iceberg-*.whl"))
if len(found) != 1:
    sys.exit("expected one snowpark_connect_deps_iceberg wheel in %s, found %s" % (wheels, found))
with zipfile.ZipFile(found[0]) as whl:
    names = whl.namelist()
    wanted = [n for n in names if n.endswith("/jars/" + jar)]
    if not wanted:
        sys.exit("%s has no %s" % (found[0], jar))
    with whl.open(wanted[0]) as src, open(os.path.join("/opt/iceberg", jar), "wb") as dst:
        shutil.copyfileobj(src, dst)
    for n in names:
        if ".dist-info/licenses/" in n or n.endswith(".dist-info/METADATA"):
            with whl.open(n) as src, open(os.path.join("/opt/iceberg/licenses", os.path.basename(n)), "wb") as dst:
                shutil.copyfileobj(src, dst)
    with zipfile.ZipFile(os.path.join("/opt/iceberg", jar)) as rt:
        for n in ("LICENSE", "NOTICE"):
            with rt.open(n) as src, open("/opt/iceberg/licenses/%s-%s" % (jar[:-4], n), "wb") as dst:
                shutil.copyfileobj(src, dst)
EOF

# Spark's Jackson (core, databind, annotations), as one jar without what jarjar's ASM cannot
# read or must not rename: multi-release classes (META-INF/versions/), module-info, and the
# service files that name the unrelocated classes.
python3 - "$SPARK_HOME/jars" /tmp/jackson-unrelocated.jar <<'EOF'
import glob, os, re, sys, zipfile
jars_dir, out = sys.argv[1:]
jars = []
for artifact in ("jackson-core", "jackson-databind", "jackson-annotations"):
    found = [j for j in glob.glob(os.path.join(jars_dir, artifact + "-*.jar"))
             if re.match(re.escape(artifact) + r"-\d[\d.]*\.jar$", os.path.basename(j))]
    if len(found) != 1:
        sys.exit("expected one %s jar in %s, found %s" % (artifact, jars_dir, found))
    jars += found
seen = set()
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
    for jar in jars:
        with zipfile.ZipFile(jar) as src:
            for info in src.infolist():
                n = info.filename
                if (n.startswith(("META-INF/versions/", "META-INF/services/", "META-INF/maven/"))
                        or n.endswith("module-info.class") or n == "META-INF/MANIFEST.MF"):
                    continue
                if n.startswith("META-INF/") and not n.endswith("/"):
                    n = "META-INF/%s/%s" % (os.path.basename(jar)[:-4], n[len("META-INF/"):])
                if n in seen:
                    continue
                seen.add(n)
                dst.writestr(n, src.read(info.filename))
print("jackson: " + " ".join(os.path.basename(j) for j in jars))
EOF
for jar in "$SPARK_HOME"/jars/jackson-core-[0-9]*.jar; do
    JACKSON_VERSION=${jar##*/jackson-core-}
    JACKSON_VERSION=${JACKSON_VERSION%.jar}
done
RELOCATED=/opt/iceberg/iceberg-shaded-jackson-$JACKSON_VERSION.jar
java -jar /usr/share/java/jarjar.jar process "$BUILD/jackson-relocation.rules" /tmp/jackson-unrelocated.jar "$RELOCATED"
python3 - "$RELOCATED" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = "org/apache/iceberg/shaded/com/fasterxml/jackson/core/JsonFactoryBuilder.class"
if need not in names or any(n.startswith("com/fasterxml/") for n in names):
    sys.exit("jarjar did not relocate Jackson as expected in %s" % sys.argv[1])
EOF
rm -f /tmp/jackson-unrelocated.jar /tmp/spark-py-requirements.txt

# On Spark's own class path (whatever --jars or --driver-class-path a command gives): the
# relocated Jackson, and the JDBC drivers a JDBC catalog on the scheduler's SQL catalog needs.
ln -s "$RELOCATED" "$SPARK_HOME/jars/"
ln -s /usr/share/java/sqlite-jdbc.jar "$SPARK_HOME/jars/sqlite-jdbc.jar"
ln -s /usr/share/java/postgresql.jar "$SPARK_HOME/jars/postgresql.jar"
