// A JAX-WS client of the Notify operation, on the stubs wsimport generates
// (with -p mturk.notify) from wsdl/<version>/AWSMechanicalTurkRequesterNotification.wsdl.
//
// usage: java JaxwsNotify WSDL_URL ENDPOINT SIGNATURE TIMESTAMP VERSION EVENT_TYPE HIT_TYPE_ID HIT_ID ASSIGNMENT_ID
import java.net.URL;
import java.util.Collections;
import javax.xml.datatype.DatatypeFactory;
import javax.xml.datatype.XMLGregorianCalendar;
import javax.xml.ws.BindingProvider;
import mturk.notify.AWSMechanicalTurkRequesterNotification;
import mturk.notify.AWSMechanicalTurkRequesterNotificationPortType;
import mturk.notify.Event;

public class JaxwsNotify {
    public static void main(String[] args) throws Exception {
        if (args.length != 9) {
            System.err.println("usage: JaxwsNotify WSDL_URL ENDPOINT SIGNATURE TIMESTAMP VERSION EVENT_TYPE HIT_TYPE_ID HIT_ID ASSIGNMENT_ID");
            System.exit(2);
        }
        AWSMechanicalTurkRequesterNotificationPortType port =
            new AWSMechanicalTurkRequesterNotification(new URL(args[0])).getAWSMechanicalTurkRequesterNotificationPort();
        ((BindingProvider) port).getRequestContext().put(BindingProvider.ENDPOINT_ADDRESS_PROPERTY, args[1]);
        // Parsed from the signed text: toXMLFormat() gives back the same text,
        // "2026-11-23T10:00:00Z" (no fractional seconds, Z kept).
        XMLGregorianCalendar timestamp = DatatypeFactory.newInstance().newXMLGregorianCalendar(args[3]);
        if (!timestamp.toXMLFormat().equals(args[3])) {
            System.err.println("XMLGregorianCalendar re-formats " + args[3] + " as " + timestamp.toXMLFormat());
            System.exit(3);
        }
        Event event = new Event();
        event.setEventType(args[5]);
        event.setEventTime(timestamp);
        event.setHITTypeId(args[6]);
        event.setHITId(args[7]);
        event.setAssignmentId(args[8]);
        port.notify(args[2], timestamp, args[4], Collections.singletonList(event));
        System.out.println("Notify OK");
    }
}
